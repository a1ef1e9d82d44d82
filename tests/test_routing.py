import pytest

from spright import App, RoutingError
from spright.descriptor import GATEWAY
from spright.routing import MethodNotAllowed, NotFound


def noop(ctx):
    return None


def make_app() -> App:
    app = App("t")
    for name in ("detect", "search", "charge"):
        app.add_function(noop, name=name)
    return app


def test_compose_with_rshift_and_repeat_a_function() -> None:
    app = make_app()
    f = app.functions
    app.route("/a", f["detect"] >> f["search"] >> f["detect"] >> f["charge"], methods=["POST"])
    app.route("/b", ["detect", "charge"])
    app.route("/c", "search")
    table = app.compile()
    assert table.chains[0] == (1, 2, 1, 3, GATEWAY)
    assert table.chains[1] == (1, 3, GATEWAY)
    assert table.chains[2] == (2, GATEWAY)


def test_decorator_and_identical_chains_share_an_id() -> None:
    app = App("t")

    @app.function(concurrency=3)
    async def hello(ctx):
        return "hi"

    app.route("/x", hello)
    app.route("/y", [hello], methods=["POST", "PUT"])
    table = app.compile()
    assert {r.chain for r in table.routes} == {0}
    assert table.functions[0].concurrency == 3
    assert [r.method for r in table.routes] == ["GET", "POST", "PUT"]


def test_path_parameters_and_405() -> None:
    app = make_app()
    app.route("/product/{id}", "detect")
    app.route("/n/{n:int}/{rest:path}", "search", methods=["POST"])
    table = app.compile()
    assert table.match("GET", "/product/OLJCESPC7Z")[1] == {"id": "OLJCESPC7Z"}
    assert table.match("POST", "/n/12/a/b")[1] == {"n": "12", "rest": "a/b"}
    with pytest.raises(NotFound):
        table.match("POST", "/n/x/a")
    with pytest.raises(MethodNotAllowed) as info:
        table.match("DELETE", "/product/1")
    assert info.value.allowed == ["GET", "HEAD"]
    assert table.match("HEAD", "/product/7")[0].method == "GET", "HEAD is answered by the GET route"


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda app: app.route("/x", "nope"), "unknown function 'nope'"),
        (lambda app: app.route("/x", []), "chain is empty"),
        (lambda app: (app.route("/x", "detect"), app.route("/x", "search")), "declared twice"),
        (lambda app: app.route("x", "detect"), "must start with '/'"),
        (lambda app: app.route("/x", "detect", methods=["FETCH"]), "unknown HTTP method"),
        (lambda app: app.route("/{a}/{a}", "detect"), "appears twice"),
        (lambda app: app.route("/{a", "detect"), "malformed"),
    ],
)
def test_mistakes_fail_at_compile_with_a_clear_message(declare, message) -> None:
    app = make_app()
    declare(app)
    with pytest.raises(RoutingError, match=message):
        app.compile()


def test_registration_mistakes() -> None:
    app = make_app()
    with pytest.raises(RoutingError, match="registered twice"):
        app.add_function(noop, name="detect")
    with pytest.raises(RoutingError, match="not callable"):
        app.add_function(42, name="x")  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="concurrency"):
        app.add_function(noop, name="y", concurrency=0)
    with pytest.raises(RoutingError, match="no functions"):
        App("empty").compile()
    other = App("other")
    stranger = other.add_function(noop, name="detect")
    app.route("/s", stranger)
    with pytest.raises(RoutingError, match="another app"):
        app.compile()


def test_domains_default_to_the_app_and_can_be_split() -> None:
    app = App("shop")
    app.add_function(noop, name="front")
    app.add_function(noop, name="pay", domain="payments")
    app.add_function(noop, name="cart")
    table = app.compile()
    assert table.domains == ("gateway", "shop", "payments")
    assert [f.domain for f in table.functions] == [1, 2, 1]
    with pytest.raises(RoutingError, match="domain"):
        app.add_function(noop, name="x", domain="bad domain!")


def test_functions_may_share_a_worker_process() -> None:
    app = App("t")
    app.add_function(noop, name="a", process="tier")
    app.add_function(noop, name="b")
    app.add_function(noop, name="c", process="tier")
    assert app.compile().processes() == {"tier": (1, 3), "b": (2,)}
    with pytest.raises(RoutingError, match="process"):
        app.add_function(noop, name="d", process="no spaces")
