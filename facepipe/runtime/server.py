"""The service skeleton: a grpc.aio server with health and reflection, API-key
authentication of every other method, an HTTP side port for /metrics, /healthz,
/readyz and /stats, tracing, and a graceful drain on SIGTERM. A service only
says what it registers and how it starts."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from facepipe import __version__, audit, auth
from facepipe.config import Settings
from facepipe.runtime import metrics
from facepipe.runtime.logs import setup_logging
from facepipe.runtime.tracing import extract, setup_tracing, shutdown_tracing, tracer

log = logging.getLogger("facepipe.runtime")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


class Service(abc.ABC):
    """What a facepipe service provides to the runtime."""

    name: str

    @abc.abstractmethod
    def register(self, server: grpc.aio.Server) -> list[str]:
        """Adds servicers; returns their full service names."""

    async def start(self, runtime: ServiceRuntime) -> None:
        """Loads models and connects to dependencies; the service is SERVING after it returns."""

    async def drain(self) -> None:
        """Stops taking new work (consumers) before the gRPC server drains."""

    async def stop(self) -> None:
        """Releases resources after the server stopped."""

    def ready_checks(self) -> dict[str, ReadyCheck]:
        return {}

    def stats(self) -> dict[str, Any]:
        return {}


class _ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every RPC in a span (parented on incoming trace context) and records metrics."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        parent = extract(handler_call_details.invocation_metadata or ())
        service = self.service

        def observe(start: float, code: str) -> None:
            metrics.GRPC_REQUESTS.labels(service, method, code).inc()
            metrics.GRPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request, context):
                start = time.perf_counter()
                with tracer().start_as_current_span(method, context=parent, kind=_SERVER):
                    try:
                        resp = await inner(request, context)
                    except BaseException:
                        observe(start, _code(context, "INTERNAL"))
                        raise
                observe(start, _code(context, "OK"))
                return resp

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator, context):
                start = time.perf_counter()
                span = tracer().start_span(method, context=parent, kind=_SERVER)
                responses = inner_ss(request_iterator, context).__aiter__()
                try:
                    while True:
                        # The span is current only while a response is made: grpc may close
                        # this generator from another context, where a detach would fail.
                        with use_span(span):
                            try:
                                item = await responses.__anext__()
                            except StopAsyncIteration:
                                break
                        yield item
                except BaseException:
                    observe(start, _code(context, "INTERNAL"))
                    raise
                finally:
                    span.end()
                observe(start, _code(context, "OK"))

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


class _AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call but health and reflection against the method's rule
    (facepipe.auth.access.METHOD_RULES): no or a bad key is UNAUTHENTICATED, a role
    or tenant the key does not allow is PERMISSION_DENIED. The handler runs with the
    caller in ``auth.current``. A call of an audited method that got past authentication
    is recorded in the audit log once it ended, with its outcome (facepipe.audit)."""

    def __init__(self, gate: auth.Authenticator, audit_log: audit.AuditLog) -> None:
        self.gate = gate
        self.audit_log = audit_log

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(auth.OPEN_PREFIXES):
            return handler
        rule = auth.rule_for(method)
        if not self.gate.enabled:
            return self._audit_only(handler, method, rule) if rule is not None and rule.audit else handler
        metadata = handler_call_details.invocation_metadata
        gate = self.gate
        audit_log = self.audit_log

        async def admit(context) -> auth.Principal:
            try:
                principal = await gate.authenticate(metadata)
            except auth.NotAuthenticated as exc:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            except auth.StillStarting as exc:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            if rule is None:  # fail closed: a method without a rule is nobody's
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} has no access rule")
            return principal

        async def unchecked(context, principal: auth.Principal) -> None:
            if rule.deferred and not principal.tenant_checked:
                log.error("handler skipped its tenant check", extra={"method": method})
                await context.abort(grpc.StatusCode.INTERNAL, f"{method} did not check the tenant")

        if handler.unary_unary:
            inner = handler.unary_unary

            async def checked_call(request, context, principal: auth.Principal):
                auth.check_role(principal, method, rule)
                rule.tenants(principal, request, rule.verb)
                return await inner(request, context)

            async def unary_unary(request, context):
                principal = await admit(context)
                token = auth.current.set(principal)
                record = _begin_audit(rule, method, principal, request)
                audit_token = audit.current.set(record)
                outcome = "OK"
                try:
                    try:
                        response = await checked_call(request, context, principal)
                    except auth.AccessDenied as exc:
                        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                except BaseException:
                    outcome = _code(context, "INTERNAL")  # abort() sets the code it raises with
                    raise
                finally:
                    auth.current.reset(token)
                    audit.current.reset(audit_token)
                    if record is not None:
                        record.outcome = outcome
                        await audit_log.record(_tenant_of(record, request))
                await unchecked(context, principal)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator, context):
                principal = await admit(context)
                try:
                    auth.check_role(principal, method, rule)
                except auth.AccessDenied as exc:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

                async def checked():
                    async for request in request_iterator:
                        rule.tenants(principal, request, rule.verb)
                        yield request

                token = auth.current.set(principal)
                try:
                    async for item in inner_ss(checked(), context):
                        yield item
                except auth.AccessDenied as exc:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                finally:
                    with contextlib.suppress(ValueError):  # a generator may end in another context
                        auth.current.reset(token)
                await unchecked(context, principal)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream and not rule.audit:
            inner_us = handler.unary_stream

            async def unary_stream(request, context):
                principal = await admit(context)
                try:
                    auth.check_role(principal, method, rule)
                    rule.tenants(principal, request, rule.verb)
                except auth.AccessDenied as exc:
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
                token = auth.current.set(principal)
                try:
                    async for item in inner_us(request, context):
                        yield item
                finally:
                    with contextlib.suppress(ValueError):  # a generator may end in another context
                        auth.current.reset(token)
                await unchecked(context, principal)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        # No service has stream-unary or audited unary-stream methods; refuse rather than pass unchecked.
        return _refused(handler, method)

    def _audit_only(self, handler, method: str, rule: auth.MethodRule):
        """With auth off: the call is still recorded, by no key."""
        if not handler.unary_unary:
            return handler
        inner = handler.unary_unary
        audit_log = self.audit_log

        async def unary_unary(request, context):
            record = _begin_audit(rule, method, None, request)
            audit_token = audit.current.set(record)
            outcome = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                outcome = _code(context, "INTERNAL")
                raise
            finally:
                audit.current.reset(audit_token)
                record.outcome = outcome
                await audit_log.record(_tenant_of(record, request))

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )


def _begin_audit(
    rule: auth.MethodRule, method: str, principal: auth.Principal | None, request: Any
) -> audit.AuditRecord | None:
    if not rule.audit:
        return None
    return audit.AuditRecord(
        action=rule.audit,
        tenant="",
        key_id=principal.key_id if principal else "",
        role=principal.role if principal else "",
        method=method,
    )


def _tenant_of(record: audit.AuditRecord, request: Any) -> audit.AuditRecord:
    """The record with the request's tenant, unless the handler named one."""
    if not record.tenant:
        record.tenant = str(getattr(request, "tenant_id", "") or "")
    return record


def _refused(handler, method: str):
    async def refuse(request, context):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method}: this call shape is not checked")

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_unary_rpc_method_handler(
        refuse, handler.request_deserializer, handler.response_serializer
    )


def _code(context: grpc.aio.ServicerContext, default: str) -> str:
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - older grpc versions lack code()
        code = None
    if code is None:
        return default
    return code.name if hasattr(code, "name") else str(code)


from opentelemetry.trace import SpanKind, use_span  # noqa: E402

_SERVER = SpanKind.SERVER


class ServiceRuntime:
    def __init__(self, service: Service, settings: Settings) -> None:
        self.service = service
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.http: asyncio.AbstractServer | None = None
        self.grpc_port = 0
        self.http_port = 0
        self.ready = False
        self._stop = asyncio.Event()
        self._service_names: list[str] = []
        self.auth = auth.Authenticator(settings.auth.enabled)
        self.audit_log = audit.AuditLog(service.name)
        self._keys_nc = None

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        setup_tracing(self.service.name, s.otlp_endpoint, s.trace_file)
        metrics.BUILD_INFO.labels(self.service.name, __version__).set(1)
        metrics.READY.labels(self.service.name).set(0)
        self.auth = self._authenticator()
        self.server = grpc.aio.server(
            interceptors=[
                _ObservingInterceptor(self.service.name),
                _AuthInterceptor(self.auth, self.audit_log),
            ],
            options=GRPC_OPTIONS,
        )
        self._service_names = self.service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.grpc_port = self._add_port(f"{s.grpc_host}:{s.grpc_port}")
        await self.server.start()
        self.http = await asyncio.start_server(self._handle_http, s.grpc_host, s.http_port)
        self.http_port = self.http.sockets[0].getsockname()[1]
        log.info("listening", extra={"grpc_port": self.grpc_port, "http_port": self.http_port})
        await self._open_keys()
        await self.service.start(self)
        self.ready = True
        metrics.READY.labels(self.service.name).set(1)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"services": self._service_names})

    async def stop(self) -> None:
        """Graceful drain: NOT_SERVING, stop consumers, finish in-flight RPCs, then close."""
        log.info("draining", extra={"grace_s": self.settings.drain_seconds})
        self.ready = False
        metrics.READY.labels(self.service.name).set(0)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.service.drain()
        if self.server is not None:
            await self.server.stop(self.settings.drain_seconds)
        await self.service.stop()
        await self._close_keys()
        if self.http is not None:
            self.http.close()
        shutdown_tracing()
        log.info("stopped")

    async def run_until_signal(self) -> bool:
        """Serves until SIGTERM or SIGINT; False when the service failed to start."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        starting = asyncio.create_task(self.start())
        stop_requested = asyncio.create_task(self._stop.wait())
        await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # SIGTERM while models load or dependencies connect: give up the start.
            starting.cancel()
            done, _ = await asyncio.wait({starting}, timeout=3)
            log.info("stopped during start-up")
            if not done:
                # A client library held on to the cancellation; nothing was served or consumed yet.
                os._exit(0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                starting.result()
            await self._abort()
            return True
        stop_requested.cancel()
        if starting.exception() is not None:
            log.error("start failed", exc_info=starting.exception())
            await self._abort()
            return False
        await self._stop.wait()
        await self.stop()
        return True

    async def _abort(self) -> None:
        """Releases what a failed start opened, without waiting on anything."""
        if self.server is not None:
            await self.server.stop(0)
        if self.http is not None:
            self.http.close()
        try:
            await self.service.stop()
        except Exception:  # noqa: BLE001 - the start error is the one worth reporting
            log.warning("stop after failed start failed", exc_info=True)
        with contextlib.suppress(Exception):
            await self._close_keys()
        shutdown_tracing()

    def _add_port(self, address: str) -> int:
        """Binds the gRPC port: TLS only when a certificate is configured, else plaintext."""
        tls = self.settings.tls
        tls.check()
        if not tls.serves_tls:
            return self.server.add_insecure_port(address)
        from facepipe.tls import server_credentials

        port = self.server.add_secure_port(address, server_credentials(tls))
        log.info("gRPC serves TLS", extra={"client_auth": tls.client_auth, "cert": str(tls.cert)})
        return port

    # -- API keys --------------------------------------------------------
    def _authenticator(self) -> auth.Authenticator:
        """Raises ValueError for a configuration that would serve unprotected by mistake."""
        s = self.settings
        auth.check_settings(s)
        if not s.auth.enabled:
            log.warning(
                "FACEPIPE_AUTH=off: every gRPC call is accepted without an API key",
                extra={"host": s.grpc_host},
            )
            return auth.Authenticator(False)
        return auth.Authenticator(True, auth.service_key(s))

    async def _open_keys(self) -> None:
        """Loads the API keys from NATS KV and follows their changes, and opens the audit
        log when the service has audited methods."""
        audited = bool(auth.audited_services() & set(self._service_names))
        if not self.settings.nats_url:
            if self.auth.enabled:
                log.warning(
                    "no FACEPIPE_NATS_URL, so no API keys: only the service credential "
                    "(FACEPIPE_SERVICE_KEY_FILE) is accepted"
                )
            if audited:
                log.warning("no FACEPIPE_NATS_URL: audit records go to this log only")
            self.auth.ready = True
            return
        if not (self.auth.enabled or audited):
            return
        from facepipe import bus, natsauth

        user, password = natsauth.credentials(self.settings)
        self._keys_nc = await bus.connect(self.settings.nats_url, f"{self.service.name}-keys", user, password)
        js = self._keys_nc.jetstream()
        if audited:
            await self.audit_log.attach(js, self.settings.privacy.audit_max_age_s)
        if not self.auth.enabled:
            return
        store = await auth.KeyStore.open(js)
        await store.start_watch()
        self.auth.store = store
        self.auth.ready = True
        log.info("API keys loaded", extra={"keys": len(store.records)})

    async def _close_keys(self) -> None:
        if self.auth.store is not None:
            await self.auth.store.stop()
        if self._keys_nc is not None:
            with contextlib.suppress(Exception):
                await self._keys_nc.close()
            self._keys_nc = None

    def request_stop(self) -> None:
        self._stop.set()

    async def _set_health(self, status: int) -> None:
        for name in ["", *self._service_names]:
            await self.health.set(name, status)

    # -- HTTP side port --------------------------------------------------
    async def readiness(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {"started": "ok" if self.ready else "starting"}
        ok = self.ready
        for name, check in self.service.ready_checks().items():
            try:
                good, detail = await asyncio.wait_for(check(), timeout=3)
            except Exception as exc:  # noqa: BLE001 - a failing check is a result, not a crash
                good, detail = False, f"{type(exc).__name__}: {exc}"
            results[name] = "ok" if good else (detail or "failed")
            ok = ok and good
        return ok, results

    async def _handle_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            status, ctype, body = await self._route(path)
            head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest()
        if path in ("/healthz", "/livez"):
            return "200 OK", "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            ok, checks = await self.readiness()
            body = json.dumps({"ready": ok, "checks": checks}).encode()
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        if path == "/stats":
            body = json.dumps({"service": self.service.name, **self.service.stats()}, default=str).encode()
            return "200 OK", "application/json", body
        return "404 Not Found", "text/plain", b"not found\n"


def run_service(service: Service, settings: Settings) -> None:
    """Process entrypoint: logs, then serve until SIGTERM."""
    setup_logging(service.name, settings.log_level)
    if not asyncio.run(ServiceRuntime(service, settings).run_until_signal()):
        raise SystemExit(1)
