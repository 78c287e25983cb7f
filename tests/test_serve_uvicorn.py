"""The internals of uvicorn that the server relies on (issue 38): ``serve/protocol.py``
subclasses uvicorn's ``HttpToolsProtocol`` (the 431 and 408 bounds) and ``serve/server.py``
subclasses ``uvicorn.Server`` (the signals). Neither is public API: an upgrade of uvicorn
that renames a method the subclass overrides would not break anything loudly, it would only
unbound the headers again. These tests check, on the installed uvicorn, that each of them
is still there with the kind (method or attribute) and the parameters the subclasses
expect, that uvicorn still calls the hooks they override, that none of the subclasses' own
names shadows one of uvicorn's, and (from the subclasses' source) that the lists below name
everything of uvicorn's they use.
"""

import ast
import asyncio
import inspect
from collections import deque
from pathlib import Path
from typing import Dict, List, Set

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from spacy_hybridner.serve import protocol as protocol_module
from spacy_hybridner.serve import server as server_module
from spacy_hybridner.serve.protocol import BoundedHttpToolsProtocol
from spacy_hybridner.serve.server import GracefulServer

UVICORN = f"uvicorn {uvicorn.__version__}"
ADVICE = (
    "; the server's subclass relies on it: adapt spacy_hybridner/serve/protocol.py or server.py to this "
    "uvicorn, or bound uvicorn in setup.py to the versions that have it"
)

# HttpToolsProtocol's methods that protocol.py overrides or calls on super(), and the
# parameters after ``self`` that it passes.
PROTOCOL_METHODS: Dict[str, List[str]] = {
    "connection_made": ["transport"],
    "connection_lost": ["exc"],
    "data_received": ["data"],
    "send_400_response": ["msg"],
    "_unsupported_upgrade_warning": [],
    "on_message_begin": [],
    "on_headers_complete": [],
    "on_body": ["body"],
    "on_message_complete": [],
    "on_response_complete": [],
}
# A connection's attributes (set by HttpToolsProtocol's __init__ or connection_made) that protocol.py reads.
PROTOCOL_ATTRIBUTES = ("loop", "transport", "flow", "client", "pipeline", "cycle", "headers")
FLOW_METHODS = ("resume_reading",)  # of the connection's FlowControl
# A request's RequestResponseCycle: the attributes protocol.py reads or sets, and their types.
CYCLE_ATTRIBUTES = {
    "response_started": bool,
    "response_complete": bool,
    "disconnected": bool,
    "keep_alive": bool,
    "message_event": asyncio.Event,
}
# The names protocol.py gives the cycles it looks at (locals, and attributes of self).
CYCLE_NAMES = ("cycle", "current", "running", "broken", "following")
CYCLE_SELF_ATTRIBUTES = ("cycle", "_current", "_running")
# Hooks of HttpToolsProtocol that protocol.py overrides and uvicorn (not protocol.py) calls: where it calls them.
PROTOCOL_CALLERS = {
    "send_400_response": "data_received",
    "_unsupported_upgrade_warning": "data_received",
    "on_response_complete": "on_headers_complete",
}

# uvicorn.Server: what server.py's GracefulServer overrides, and the attributes it reads or sets.
SERVER_METHODS: Dict[str, List[str]] = {"capture_signals": [], "handle_exit": ["sig", "frame"]}
SERVER_ATTRIBUTES = ("config", "should_exit", "force_exit")
CONFIG_ATTRIBUTES = ("timeout_graceful_shutdown",)


def parameters(function) -> List[str]:
    """The parameters after ``self``; each must be one that can be passed by position."""
    params = list(inspect.signature(function).parameters.values())[1:]
    for param in params:
        assert param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, (
            f"{UVICORN}: {function.__qualname__}'s parameter {param} is {param.kind.description}{ADVICE}"
        )
    return [param.name for param in params]


@pytest.mark.parametrize(
    "base,methods",
    [(HttpToolsProtocol, PROTOCOL_METHODS), (uvicorn.Server, SERVER_METHODS)],
    ids=["HttpToolsProtocol", "Server"],
)
def test_the_methods_the_subclasses_override_or_call_are_there_with_their_parameters(base, methods):
    for name, expected in methods.items():
        assert name in dir(base), f"{UVICORN}: {base.__name__} has no {name!r} (renamed or removed?){ADVICE}"
        member = inspect.getattr_static(base, name)
        assert inspect.isfunction(member), (
            f"{UVICORN}: {base.__name__}.{name} is a {type(member).__name__}, not a method{ADVICE}"
        )
        assert parameters(member) == expected, (
            f"{UVICORN}: {base.__name__}.{name}{inspect.signature(member)}: expected the parameters (self, "
            f"{', '.join(expected)}){ADVICE}"
        )


def test_uvicorn_still_calls_the_hooks_the_subclasses_override():
    for hook, caller in PROTOCOL_CALLERS.items():
        source = inspect.getsource(getattr(HttpToolsProtocol, caller))
        assert f"self.{hook}" in source, f"{UVICORN}: HttpToolsProtocol.{caller} no longer calls {hook}{ADVICE}"
    assert "self.capture_signals()" in inspect.getsource(uvicorn.Server), (
        f"{UVICORN}: uvicorn.Server no longer installs its signal handlers with capture_signals(){ADVICE}"
    )


def test_status_lines():
    for status in (400, 408, 431):
        line = httptools_impl.STATUS_LINE.get(status)
        assert isinstance(line, bytes) and line.startswith(b"HTTP/1.1 %d " % status) and line.endswith(b"\r\n"), (
            f"{UVICORN}: httptools_impl.STATUS_LINE[{status}] is {line!r}{ADVICE}"
        )


class Transport(asyncio.Transport):
    """A connection's transport that keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 9000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def connection(protocol_class: type, app) -> HttpToolsProtocol:
    config = uvicorn.Config(app, http="httptools", ws="none", lifespan="off", log_config=None)
    config.load()
    connection = protocol_class(config=config, server_state=ServerState(), app_state={})
    connection.connection_made(Transport())
    return connection


def test_a_connection_has_the_attributes_the_protocol_reads():
    """Drive uvicorn's own protocol: two pipelined requests, the first held by the app."""
    release = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def exercise():
        conn = await connection(HttpToolsProtocol, app)
        missing = [name for name in PROTOCOL_ATTRIBUTES if name not in vars(conn)]
        assert not missing, f"{UVICORN}: an HttpToolsProtocol connection has no attribute(s) {missing}{ADVICE}"
        assert conn.loop is asyncio.get_running_loop() and isinstance(conn.transport, Transport), UVICORN + ADVICE
        assert conn.client == ("127.0.0.1", 9000), f"{UVICORN}: connection.client is {conn.client!r}{ADVICE}"
        for name in FLOW_METHODS:
            assert callable(getattr(conn.flow, name, None)), f"{UVICORN}: connection.flow has no {name}(){ADVICE}"
        request = b"GET /%d HTTP/1.1\r\nHost: x\r\nX-Test: Yes\r\n\r\n"
        conn.data_received(request % 1 + request % 2)
        assert (b"x-test", b"Yes") in conn.headers, f"{UVICORN}: connection.headers is {conn.headers!r}{ADVICE}"
        assert isinstance(conn.pipeline, deque) and len(conn.pipeline) == 1, (
            f"{UVICORN}: connection.pipeline is {conn.pipeline!r}, not a deque of the waiting requests{ADVICE}"
        )
        waiting = conn.pipeline[-1]
        assert isinstance(waiting, tuple) and len(waiting) == 2 and waiting[0] is conn.cycle, (
            f"{UVICORN}: connection.pipeline holds {waiting!r}, not (cycle, app) pairs{ADVICE}"
        )
        for name, kind in CYCLE_ATTRIBUTES.items():
            value = getattr(conn.cycle, name, None)
            assert isinstance(value, kind), f"{UVICORN}: a request's cycle.{name} is {value!r}, not a {kind}{ADVICE}"
        release.set()
        for _ in range(100):
            await asyncio.sleep(0)
            if conn.transport.written.count(b"HTTP/1.1 200") == 2:
                break
        assert conn.transport.written.count(b"HTTP/1.1 200") == 2 and not conn.pipeline, UVICORN + ADVICE
        assert conn.cycle.response_complete and conn.cycle.keep_alive, UVICORN + ADVICE

    asyncio.run(exercise())


def test_no_name_of_the_protocol_shadows_one_of_uvicorn():
    """The names BoundedHttpToolsProtocol adds (its methods and class attributes, the
    attributes its __init__ sets) must not be names that uvicorn uses already."""

    async def app(scope, receive, send):  # never called
        raise AssertionError

    async def instances():
        return vars(await connection(HttpToolsProtocol, app)), vars(await connection(BoundedHttpToolsProtocol, app))

    base_attributes, own_attributes = asyncio.run(instances())
    added = {name for name in vars(BoundedHttpToolsProtocol) if not name.startswith("__")} - set(PROTOCOL_METHODS)
    added |= set(own_attributes) - set(base_attributes)
    added |= assigned_in_init(BoundedHttpToolsProtocol)
    shadowed = sorted(name for name in added if name in dir(HttpToolsProtocol) or name in base_attributes)
    assert not shadowed, f"{UVICORN}: HttpToolsProtocol now has {shadowed} of its own{ADVICE}"


def assigned_in_init(cls: type) -> Set[str]:
    init = ast.parse(inspect.getsource(cls.__init__).strip())
    return {node.attr for node in ast.walk(init) if isinstance(node, ast.Attribute) and is_self(node.value)}


def is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def class_node(path: Path, name: str) -> ast.ClassDef:
    return next(
        n
        for n in ast.walk(ast.parse(path.read_text(encoding="utf8")))
        if isinstance(n, ast.ClassDef) and n.name == name
    )


def used_of_base(cls: type, path: Path) -> Set[str]:
    """The names of the base class that ``cls`` overrides, or reads on ``self`` or
    ``super()`` without defining them itself (dunders left out)."""
    base = cls.__mro__[1]
    own = set(vars(cls)) | assigned_in_init(cls)
    accessed = set()
    for n in ast.walk(class_node(path, cls.__name__)):
        if isinstance(n, ast.Attribute):
            if is_self(n.value) or (isinstance(n.value, ast.Call) and getattr(n.value.func, "id", None) == "super"):
                accessed.add(n.attr)
    overridden = {name for name in vars(cls) if name in dir(base)}
    return {name for name in (accessed - own) | overridden if not name.startswith("__")}


def test_the_lists_name_everything_of_uvicorn_the_subclasses_use():
    """From the source: a new use of uvicorn's internals has to be added above (and is then checked)."""
    protocol_path = Path(protocol_module.__file__)
    unlisted = used_of_base(BoundedHttpToolsProtocol, protocol_path) - set(PROTOCOL_METHODS) - set(PROTOCOL_ATTRIBUTES)
    assert not unlisted, f"protocol.py uses HttpToolsProtocol's {sorted(unlisted)}: add them to this test's lists"
    cycle_uses, flow_uses = set(), set()
    for n in ast.walk(class_node(protocol_path, "BoundedHttpToolsProtocol")):
        if not isinstance(n, ast.Attribute):
            continue
        holder = n.value
        if isinstance(holder, ast.Name) and holder.id in CYCLE_NAMES:
            cycle_uses.add(n.attr)
        elif isinstance(holder, ast.Attribute) and is_self(holder.value):
            if holder.attr in CYCLE_SELF_ATTRIBUTES:
                cycle_uses.add(n.attr)
            elif holder.attr == "flow":
                flow_uses.add(n.attr)
    unlisted = cycle_uses - set(CYCLE_ATTRIBUTES)
    assert not unlisted, f"protocol.py uses a cycle's {sorted(unlisted)}: add them to this test's lists"
    assert flow_uses <= set(FLOW_METHODS), f"protocol.py uses FlowControl's {sorted(flow_uses - set(FLOW_METHODS))}"
    server_path = Path(server_module.__file__)
    unlisted = used_of_base(GracefulServer, server_path) - set(SERVER_METHODS) - set(SERVER_ATTRIBUTES)
    assert not unlisted, f"server.py uses uvicorn.Server's {sorted(unlisted)}: add them to this test's lists"


def test_the_server_has_the_attributes_the_subclass_reads():
    server = uvicorn.Server(uvicorn.Config(lambda scope, receive, send: None, timeout_graceful_shutdown=3))
    for name in SERVER_ATTRIBUTES:
        assert name in vars(server), f"{UVICORN}: uvicorn.Server has no attribute {name!r}{ADVICE}"
    assert server.should_exit is False and server.force_exit is False, UVICORN + ADVICE
    for name in CONFIG_ATTRIBUTES:
        assert getattr(server.config, name, None) == 3, f"{UVICORN}: uvicorn.Config has no {name!r}{ADVICE}"
