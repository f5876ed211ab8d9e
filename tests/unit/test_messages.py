"""Message models: the POST body, the queue task and the result."""

from __future__ import annotations

import json

import pytest

from facepipe.errors import InvalidMessage, InvalidRequest
from facepipe.messages import (
    DetectRequest,
    FaceTask,
    Result,
    readable_reply,
    readable_request_id,
)


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


@pytest.mark.parametrize("rid", ["ab\n", "ab\r\n", "a b", "-ab", "r" * 129, ""])
def test_request_id_is_matched_whole(rid: str) -> None:
    with pytest.raises(InvalidRequest, match="request_id"):
        DetectRequest.parse({"request_id": rid, "content": "aGk="}, max_frames=4)


@pytest.mark.parametrize("name", ["a\x00.jpg", "a\nb.jpg", "a\x85", "a\ufffe", "a\uffff"])
def test_filenames_may_not_hold_control_characters(name: str) -> None:
    with pytest.raises(InvalidRequest, match="filename"):
        DetectRequest.parse({"filename": name, "content": "aGk="}, max_frames=4)


def test_the_filename_limit_is_a_setting() -> None:
    body = {"frames": [{"filename": "f" * 20, "content": "aGk="}]}
    assert DetectRequest.parse(body, max_frames=4, max_filename=20).frames[0].filename
    with pytest.raises(InvalidRequest, match=r"frames\.0\.filename: 21 .*FACEPIPE_MAX_FILENAME"):
        DetectRequest.parse(
            {"frames": [{"filename": "f" * 21, "content": "aGk="}]}, max_frames=4, max_filename=20
        )


def test_validation_messages_escape_unknown_names_and_stay_short() -> None:
    body = {"content": "aGk=", "\uffff\r\n": 1, **{f"extra{i}": i for i in range(20)}}
    with pytest.raises(InvalidRequest) as info:
        DetectRequest.parse(body, max_frames=4)
    message = info.value.message
    assert "\uffff" not in message
    assert "\r" not in message
    assert "'\\uffff\\r\\n'" in message
    assert "and 16 more errors" in message


@pytest.mark.parametrize(
    ("body", "attribute", "expected"),
    [
        ('{"request_id": "r1", "width": "wide"}', None, "r1"),  # schema-invalid body
        ('{"request_id": "r1", "faces": [{"bo', None, "r1"),  # a body cut short
        ('{"request_id": "r1', None, None),  # cut inside the id: not trusted
        ("not json", "r2", "r2"),  # the message attribute
        ('{"request_id": "r1"}', "r2", "r2"),  # the attribute first
        ('{"request_id": "r1"}', "bad id", "r1"),  # an invalid attribute is skipped
        ('{"request_id": "r 1"}', None, None),  # only valid request_ids count
        ('{"request_id": 7}', None, None),
        ('["r1"]', None, None),
        ("[" * 10_000, None, None),
        ("", None, None),
    ],
)
def test_readable_request_id(body: str, attribute: str | None, expected: str | None) -> None:
    assert readable_request_id(body, attribute) == expected


def test_task_numbers_must_be_finite_and_in_range() -> None:
    face = {"box": [0, 0, 1, 1], "probability": 1, "crop_png": "x", "landmarks": [[1, 2]]}
    base = {"request_id": "r1", "width": 4, "height": 3, "sent_at": 1.5, "faces": [face]}
    FaceTask.parse_json(json.dumps(base))
    for field, value in [("width", 0), ("height", -3), ("sent_at", float("inf"))]:
        with pytest.raises(InvalidMessage, match=field):
            FaceTask.parse_json(json.dumps({**base, field: value}))
    for key, value in [
        ("box", [0, 0, float("nan"), 1]),
        ("probability", 1.5),
        ("landmarks", [[1]]),
    ]:
        with pytest.raises(InvalidMessage, match=key):
            FaceTask.parse_json(json.dumps({**base, "faces": [{**face, key: value}]}))


# --- reply: how a request's result is delivered -------------------------------------------------
def test_a_frame_asks_for_its_result_on_the_queue_unless_it_says_by_id() -> None:
    one = DetectRequest.parse({"content": "aGk="}, max_frames=4).frames[0]
    by_id = DetectRequest.parse({"content": "aGk=", "reply": "by_id"}, max_frames=4).frames[0]
    several = DetectRequest.parse(
        {"frames": [{"content": "aGk="}, {"content": "aGk=", "reply": "by_id"}]}, max_frames=4
    )
    assert (one.reply, by_id.reply) == ("queue", "by_id")
    assert [f.reply for f in several.frames] == ["queue", "by_id"]


@pytest.mark.parametrize("value", ["email", "BY_ID", None, 1, ["by_id"]])
def test_an_unknown_reply_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(
        InvalidRequest, match=r"frames\.0\.reply: Input should be 'queue' or 'by_id'"
    ):
        DetectRequest.parse({"content": "aGk=", "reply": value}, max_frames=4)
    with pytest.raises(InvalidRequest, match="reply"):  # only per frame, not for the request
        DetectRequest.parse({"frames": [{"content": "aGk="}], "reply": "by_id"}, max_frames=4)


def test_a_task_carries_by_id_and_a_queue_task_is_the_json_of_before() -> None:
    """A ``queue`` task is written without ``reply``: an older recognition worker, whose
    FaceTask forbids unknown fields, still reads every task of a client that did not ask."""
    base = {"request_id": "r1", "width": 4, "height": 3, "sent_at": 1.5}
    queued = FaceTask.parse_json(json.dumps(base))
    by_id = FaceTask.parse_json(json.dumps({**base, "reply": "by_id"}))

    assert queued.reply == "queue" and "reply" not in json.loads(queued.model_dump_json())
    assert "reply" not in queued.model_dump()
    assert json.loads(by_id.model_dump_json())["reply"] == "by_id"
    assert FaceTask.parse_json(by_id.model_dump_json()) == by_id
    with pytest.raises(InvalidMessage, match="reply"):
        FaceTask.parse_json(json.dumps({**base, "reply": "email"}))


def test_a_results_reply_travels_with_it_but_is_never_written() -> None:
    result = Result(request_id="r1", status="ok", reply="by_id")
    assert result.model_copy(update={"faces": []}).reply == "by_id"  # the claim-checked form
    assert "reply" not in json.loads(result.to_json()) and "reply" not in result.model_dump()
    assert Result.model_validate_json(result.to_json()).reply == "queue"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{"request_id": "r1", "width": "wide", "reply": "by_id"}', "by_id"),  # invalid task
        ('{"reply": "by_id", "request_id": "r1", "faces": [{"bo', "by_id"),  # cut short
        ('{"request_id": "r1", "reply": "by_i', "queue"),  # cut inside the value
        ('{"request_id": "r1", "reply": "email"}', "queue"),
        ('{"request_id": "r1"}', "queue"),
        ("not json", "queue"),
        ('["by_id"]', "queue"),
        ("[" * 10_000, "queue"),
    ],
)
def test_readable_reply(body: str, expected: str) -> None:
    assert readable_reply(body) == expected
