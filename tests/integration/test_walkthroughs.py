"""docs/walkthroughs.md stays true: its own-photos lines run as written (on the samples), every
`facepipe` line of the after-deploy part parses, the idle-cost table counts what the template
holds, and every message the troubleshooting table quotes is still one facepipe prints."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml

from facepipe.cli.main import build_parser
from tests.conftest import ROOT, run_facepipe

PAGE = (ROOT / "docs" / "walkthroughs.md").read_text()


def section(title: str) -> str:
    start = PAGE.index(f"## {title}\n")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start : end if end != -1 else None]


def bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    joined = [re.sub(r"\\\n\s*", "", block) for block in blocks]
    return [
        line.split("  #")[0].strip()
        for block in joined
        for line in block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


@pytest.mark.usefixtures("no_vggface2")
def test_the_own_photos_lines_run_as_written(tmp_path: Path) -> None:
    outputs = []
    for line in bash_lines(section("Your own photos")):
        argv = shlex.split(line.replace("out/", f"{tmp_path}/out/"))
        assert argv[0] == ".venv/bin/facepipe", line
        done = run_facepipe(*argv[1:])  # the tests' own console script: .venv/bin/facepipe
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        outputs.append(done)
    listed, ran, found = outputs[1], outputs[2], outputs[4]
    assert "barack-obama" in listed.stdout and "joe-biden" in listed.stdout
    assert "joe-biden" in ran.stdout and "barack-obama" in ran.stdout
    assert len(list((tmp_path / "out" / "mine").glob("*.jpg"))) == 3
    photos = sorted(json.loads(line)["photo"] for line in found.stdout.splitlines())
    assert photos == ["biden-west-wing.jpg", "obama-and-biden.jpg"]


def test_every_facepipe_line_after_deploy_parses() -> None:
    parser = build_parser()
    lines = [x for x in bash_lines(section("After deploy")) if x.startswith("facepipe ")]
    assert len(lines) >= 5
    for line in lines:
        parser.parse_args(shlex.split(line)[1:])  # exits 2 on a flag that does not exist


def _template_types() -> Counter[str]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=Loader)
    return Counter(r["Type"] for r in template["Resources"].values())


def test_the_idle_cost_table_counts_what_the_template_holds() -> None:
    types = _template_types()
    rows = {
        "Lambda functions": types["AWS::Serverless::Function"],
        "SQS queues": types["AWS::SQS::Queue"],
        "CloudWatch alarms": types["AWS::CloudWatch::Alarm"],
        "CloudWatch dashboards": types["AWS::CloudWatch::Dashboard"],
        "CloudWatch log groups": types["AWS::Logs::LogGroup"],
        "DynamoDB tables": types["AWS::DynamoDB::Table"],
        "S3 buckets": types["AWS::S3::Bucket"],
        "ECS services": types["AWS::ECS::Service"],
    }
    table = section("After deploy")
    for name, count in rows.items():
        assert f"| {name} | {count} |" in table, name
    billed_idle = {
        "AWS::EC2::Instance",
        "AWS::RDS::DBInstance",
        "AWS::KMS::Key",
        "AWS::EC2::NatGateway",
    }
    assert not billed_idle & set(types), "a resource billed by the hour: add it to the table"


def test_every_quoted_message_is_still_printed_by_facepipe() -> None:
    code = "\n".join(
        p.read_text()
        for p in [*(ROOT / "shared" / "facepipe").rglob("*.py"), ROOT / "scripts" / "install.sh"]
    )
    rows = re.findall(r"^\| `([^`]+)` \|", section("Troubleshooting"), re.M)
    assert len(rows) >= 10
    for message in rows:
        assert message in code, message
