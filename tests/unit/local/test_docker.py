"""How facepipe runs Docker (checked without a daemon): a private dockerd with no bridge and no
iptables, and function containers on the host network whose RIE listens on 127.0.0.1 only."""

from __future__ import annotations

from pathlib import Path

from facepipe.local.docker import DockerDaemon, ImageFunction, image_name, wheel_version


def test_the_private_dockerd_has_no_bridge_and_its_own_root(tmp_path: Path) -> None:
    daemon = DockerDaemon(tmp_path / "docker", host="")
    command = daemon.dockerd_command()
    assert {"--bridge=none", "--iptables=false", "--ip6tables=false"} <= set(command)
    assert f"--host=unix://{tmp_path}/docker/docker.sock" in command
    assert all(not part.startswith("--host=tcp") for part in command)
    assert f"--data-root={tmp_path}/docker/data" in command


def test_a_function_container_listens_on_loopback_only(tmp_path: Path) -> None:
    daemon = DockerDaemon(host="unix:///nowhere")
    env = {"FACEPIPE_BUCKET": "b", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}
    function = ImageFunction(
        daemon, "facepipe-detection:local", env, "ingest_app.handler", memory_mb=2048
    )
    function.port = 9123
    function._tmp = str(tmp_path)
    command = function.command(9124)
    assert command[:2] == ["docker", "run"]
    assert command[command.index("--network") + 1] == "host"
    assert not {"-p", "--publish", "-P"} & set(command)
    assert "0.0.0.0" not in " ".join(command)
    assert command[command.index("--runtime-interface-emulator-address") + 1] == "127.0.0.1:9123"
    assert command[command.index("--runtime-api-address") + 1] == "127.0.0.1:9124"
    assert command[-4:] == ["python", "-m", "awslambdaric", "ingest_app.handler"]  # the image's
    assert command[command.index("--memory") + 1] == "2048m"  # Lambda's MemorySize as the limit
    mount = command[command.index("-v") + 1]
    assert mount.endswith(":/aws-lambda-rie:ro")  # mounted as sam local invoke mounts it
    env_file = Path(command[command.index("--env-file") + 1]).read_text()
    assert "FACEPIPE_BUCKET=b\n" in env_file
    assert "PATH=" not in env_file  # nothing of this machine's environment


def test_image_names_and_wheel_versions() -> None:
    assert image_name(Path("functions/recognition")) == "facepipe-recognition:local"
    wheel = Path("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert wheel_version(wheel) == "2.13.0+cpu"
