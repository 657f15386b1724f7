import sluice_plugin as sdk
from sluice_plugin import Output, Params, Record
from sluice_plugin.testing import run

import app


def test_adds_square_and_source():
    r = Record("testnum", 2, 41, None, None, b'{"num":12}')
    assert app.enrich({"num": 12}, r) == {"num": 12, "square": 144, "source": {"topic": "testnum", "partition": 2, "offset": 41}}
    assert list(app.enrich({"num": 12}, r)) == ["num", "source", "square"]


def test_rejects_bad_input():
    out = run(['{"num": 1.5}', '{"num": 9223372036854775807}', "nope", '{"num": 3}'])
    assert out[0][0] == "error" and "no integer field" in out[0][1] and not out[0][2]
    assert out[1][0] == "error" and "overflows" in out[1][1]
    assert out[2][0] == "error" and out[2][2], "not JSON is invalid input"
    assert out[3] == ("emit", [Output(0, {"num": 3, "square": 9, "source": {"topic": "t", "partition": 0, "offset": 3}})])


def test_init_checks_field_name():
    assert sdk._run_init([("square_field", "a.b")]) is not None
    assert sdk._run_init([]) is None
