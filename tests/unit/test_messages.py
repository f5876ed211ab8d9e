"""Message models: the POST body, the queue task and the result."""

from __future__ import annotations

import json

import pytest

from facepipe.errors import InvalidMessage, InvalidRequest
from facepipe.messages import DetectRequest, FaceTask, Result


def test_single_frame_body_and_generated_request_id() -> None:
    req = DetectRequest.parse({"filename": "a.jpg", "content": "aGk="}, max_frames=4)
    assert len(req.frames) == 1
    frame = req.frames[0]
    assert frame.filename == "a.jpg"
    assert len(frame.request_id) == 32  # uuid4 hex
    other = DetectRequest.parse({"content": "aGk="}, max_frames=4).frames[0]
    assert other.request_id != frame.request_id


def test_multi_frame_body_keeps_order_and_ids() -> None:
    body = {"frames": [{"request_id": f"r-{i}", "content": "aGk="} for i in range(3)]}
    req = DetectRequest.parse(body, max_frames=4)
    assert [f.request_id for f in req.frames] == ["r-0", "r-1", "r-2"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "JSON object"),
        ({"request_id": "x"}, "content"),
        ({"content": ""}, "content"),
        ({"content": "aGk=", "colour": "red"}, "colour"),
        ({"content": "aGk=", "request_id": "../../etc/passwd"}, "request_id"),
        ({"content": "aGk=", "request_id": "x" * 129}, "request_id"),
        ({"content": "aGk=", "filename": "f" * 256}, "filename"),
        ({"frames": []}, "frames"),
        (
            {"frames": [{"request_id": "a", "content": "x"}, {"request_id": "a", "content": "y"}]},
            "unique",
        ),
    ],
)
def test_bad_bodies_name_the_problem(body: object, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match) as info:
        DetectRequest.parse(body, max_frames=4)
    assert info.value.status == 400


def test_too_many_frames_is_413() -> None:
    body = {"frames": [{"content": "aGk="}] * 5}
    with pytest.raises(InvalidRequest, match="FACEPIPE_MAX_FRAMES") as info:
        DetectRequest.parse(body, max_frames=4)
    assert info.value.status == 413
    assert info.value.code == "too_many_frames"


def test_validation_messages_do_not_echo_input() -> None:
    secret = "s3cr3t-" + "A" * 300
    with pytest.raises(InvalidRequest) as info:
        DetectRequest.parse({"content": "aGk=", "filename": secret}, max_frames=4)
    assert secret not in info.value.message


def test_task_parse_errors_are_invalid_messages() -> None:
    with pytest.raises(InvalidMessage):
        FaceTask.parse_json("not json")
    with pytest.raises(InvalidMessage, match="request_id"):
        FaceTask.parse_json(json.dumps({"width": 1, "height": 1, "sent_at": 0}))
    task = FaceTask.parse_json(
        json.dumps({"request_id": "r1", "width": 4, "height": 3, "sent_at": 1.5})
    )
    assert (task.request_id, task.width, task.faces, task.payload_key) == ("r1", 4, [], None)


def test_result_json_has_required_fields_and_omits_nulls() -> None:
    result = Result(request_id="r1", filename="a.jpg", status="no_face")
    data = json.loads(result.to_json())
    assert data["request_id"] == "r1"
    assert data["status"] == "no_face"
    assert data["faces"] == []
    assert data["result"] == []
    assert "error" not in data
