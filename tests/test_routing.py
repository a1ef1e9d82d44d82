import uuid

import pytest

from spright import App, Function, RoutingError
from spright.data.descriptor import GATEWAY
from spright.data.table import MethodNotAllowed, NotFound


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
    ours = [r for r in table.routes if r.builtin is None]
    assert {r.chain for r in ours} == {0}
    assert table.functions[0].concurrency == 3
    assert [r.method for r in ours] == ["GET", "POST", "PUT"]


def test_routes_with_different_timeouts_get_their_own_chain() -> None:
    """A handler's deadline is its chain's timeout: two routes over the same hops but with
    different timeouts must not share one (the longer would hold for both)."""
    app = make_app()
    app.route("/quick", "detect", timeout=0.5)
    app.route("/slow", "detect", timeout=20)
    app.route("/also-quick", ["detect"], timeout=0.5)
    table = app.compile()
    quick, slow, also = (table.match("GET", path)[0] for path in ("/quick", "/slow", "/also-quick"))
    assert quick.chain == also.chain != slow.chain
    assert table.chains[quick.chain] == table.chains[slow.chain] == (1, GATEWAY)
    assert table.timeouts[quick.chain] == 0.5 and table.timeouts[slow.chain] == 20


def test_metrics_is_a_builtin_route_the_app_may_override() -> None:
    app = make_app()
    app.route("/x", "detect")
    route, _ = app.compile().match("GET", "/metrics")
    assert route.builtin == "metrics"
    assert [r["path"] for r in app.compile().describe()] == ["/x"], "spright routes lists the app's chains"
    app.route("/metrics", "search")
    route, _ = app.compile().match("GET", "/metrics")
    assert route.builtin is None and app.compile().chains[route.chain] == (2, GATEWAY)


def test_a_chain_that_crosses_security_domains_fails_at_compile_naming_the_route() -> None:
    app = App("parking")
    app.add_function(noop, name="detect")
    app.add_function(noop, name="search")
    app.add_function(noop, name="charge", domain="payments")
    app.route("/ok", ["detect", "search"])
    app.route("/pay", "charge")  # alone in its domain: fine
    app.compile()
    app.route("/plate", app.functions["detect"] >> app.functions["search"] >> app.functions["charge"],
              methods=["POST"])
    with pytest.raises(RoutingError, match=r"route POST /plate: the chain crosses security domains "
                                           r"\('parking': detect, search; 'payments': charge\)"):
        app.compile()


def test_a_process_hosts_one_domain() -> None:
    """A process maps one domain's memory: functions of two domains in one is a startup error."""
    app = App("parking")
    app.add_function(noop, name="detect", process="lookup")
    app.add_function(noop, name="charge", domain="payments", process="lookup")
    with pytest.raises(RoutingError, match=r"function 'charge': process 'lookup' hosts functions of security "
                                           r"domains 'parking' and 'payments'"):
        app.compile()


def test_at_most_fifteen_domains() -> None:
    app = App("many")
    for number in range(16):
        app.add_function(noop, name=f"f{number}", domain=f"d{number}")
    with pytest.raises(RoutingError, match="16 security domains; at most 15"):
        app.compile()


def test_path_parameters_and_405() -> None:
    app = make_app()
    app.route("/product/{id}", "detect")
    app.route("/n/{n:int}/{rest:path}", "search", methods=["POST"])
    table = app.compile()
    assert table.match("GET", "/product/OLJCESPC7Z")[1] == {"id": "OLJCESPC7Z"}
    route, params = table.match("POST", "/n/12/a/b")
    assert params == {"n": "12", "rest": "a/b"}, "the gateway keeps the raw strings"
    assert route.convert(params) == {"n": 12, "rest": "a/b"}, "handlers get typed values"
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
        (lambda app: app.route("/{a:date}", "detect"), "unknown type 'date'"),
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


def test_sync_generator_handlers_are_refused_at_registration() -> None:
    """A sync generator would block the worker's loop between parts: refused where the user
    registers it, naming the function and the async form. An async generator streams."""

    def pages(ctx):
        yield b"one"

    async def events(ctx):
        yield b"one"

    app = App("t")
    with pytest.raises(RoutingError, match=r"function 'pages': its handler is a generator function: .*async def pages"):
        app.add_function(pages)
    with pytest.raises(RoutingError, match="async generator"):
        app.function(name="decorated")(pages)
    assert app.functions == {}
    assert app.add_function(events).name == "events"


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


@pytest.mark.parametrize(
    ("template", "path", "typed"),
    [
        ("/p/{id}", "/p/42", {"id": "42"}),
        ("/p/{id:int}", "/p/42", {"id": 42}),
        ("/p/{x:float}", "/p/2.5", {"x": 2.5}),
        ("/p/{x:float}", "/p/3", {"x": 3.0}),
        ("/p/{u:uuid}", "/p/12345678-1234-5678-1234-567812345678",
         {"u": uuid.UUID("12345678-1234-5678-1234-567812345678")}),
        ("/p/{rest:path}", "/p/a/b/c", {"rest": "a/b/c"}),
    ],
)
def test_path_parameter_types_convert_as_declared(template: str, path: str, typed: dict) -> None:
    app = make_app()
    app.route(template, "detect")
    route, params = app.compile().match("GET", path)
    assert route.convert(params) == typed


@pytest.mark.parametrize(("template", "path"), [("/p/{id:int}", "/p/4x"), ("/p/{u:uuid}", "/p/not-a-uuid"),
                                               ("/p/{x:float}", "/p/1.2.3"), ("/p/{id}", "/p/a/b")])
def test_a_path_that_does_not_fit_the_parameter_type_is_not_found(template: str, path: str) -> None:
    app = make_app()
    app.route(template, "detect")
    with pytest.raises(NotFound):
        app.compile().match("GET", path)


async def test_a_bare_function_decorator_registers_the_handler_as_the_called_form_does() -> None:
    """``@app.function`` without parentheses used to register nothing and rebind the name to a
    lambda; now it registers, as ``@app.function()`` does."""
    from spright.testing import TestClient

    app = App("bare")

    @app.function
    async def hello(ctx) -> str:
        return "hello"

    assert isinstance(hello, Function) and app.functions == {"hello": hello}
    app.route("/", hello)
    async with TestClient(app) as client:
        assert (await client.get("/")).body == b"hello"
    with pytest.raises(RoutingError, match="takes a function name"):
        app.function(42)  # type: ignore[call-overload]


def test_the_public_api_names_what_apps_configure_with() -> None:
    import spright
    from spright.data.autoscale import ScalePolicy

    assert spright.ScalePolicy is ScalePolicy and "ScalePolicy" in spright.__all__


def test_every_gateway_process_endpoint_is_named_gateway_and_in_domain_zero() -> None:
    """A further gateway's endpoint is no function's: it was named (and domained) after the last one."""
    app = App("gateways")
    app.route("/", app.add_function(lambda ctx: b"", name="last"))
    table = app.compile(gateways=3)
    assert [table.name_of(e) for e in table.gateways] == ["gateway"] * 3
    assert [table.domain_of(e) for e in table.gateways] == ["gateway"] * 3
    assert table.name_of(table.function_id("last")) == "last"
