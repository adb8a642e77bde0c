"""ThingsBoard's CoAP transport, the part a meter's tooling uses: provisioning and device data.

As CoapTransportResource answers (thingsboard/thingsboard :
common/transport/coap/src/main/java/org/thingsboard/server/transport/coap/CoapTransportResource.java,
CoapTransportService.java; the adaptor is adaptors/JsonCoapAdaptor.java):

    POST coap://host:5683/api/v1/provision          (also api/v1/<anything>/provision)
        SUCCESS                 2.01 Created, the JSON reply, Content-Format 0 (text/plain)
        NOT_FOUND, FAILURE      4.00 Bad Request, the JSON reply, Content-Format 0
        request not parsed      4.00, empty
        core error              5.00, empty
    POST coap://host:5683/api/v1/<token>/telemetry | attributes
        2.01 once accepted, 4.01 unknown token, 4.00 bad payload
    GET on a provision path: 4.00; PUT, DELETE: 4.05 (Californium's default); other paths: 4.04.

The request's Content-Format option is ignored, as ThingsBoard ignores it. Californium sends JSON
replies with exchange.respond(code, String), which sets text/plain. A reply that is not ready soon
is sent as a separate response after an empty ACK (aiocoap does this by itself after 0.1 s;
ThingsBoard after transport.coap.piggyback_timeout, 500 ms): clients must handle both.
"""
import asyncio
import logging

import aiocoap
import aiocoap.resource

from .provisioning import ParseFailure, parse_request

log = logging.getLogger("tbsim")

TEXT_PLAIN = 0


def _reply(code, payload=b"", text=False):
    msg = aiocoap.Message(code=code, payload=payload.encode("utf-8") if isinstance(payload, str) else payload)
    if text:
        msg.opt.content_format = TEXT_PLAIN
    return msg


class _Root(aiocoap.resource.Resource):
    """Every path lands here (CoapTransportService: "api" -> "v1" returns itself for any child)."""

    def __init__(self, sim):
        super().__init__()
        self.sim = sim

    async def needs_blockwise_assembly(self, request):
        return True

    async def render(self, request):
        try:
            return await self._render(request)
        except Exception:                                   # a bug must not kill the server
            log.exception("CoAP request failed")
            return _reply(aiocoap.Code.INTERNAL_SERVER_ERROR)

    async def _render(self, request):
        sim = self.sim
        path = list(request.opt.uri_path)
        code = request.code
        if len(path) < 3 or path[:2] != ["api", "v1"]:
            return _reply(aiocoap.Code.NOT_FOUND)
        if code not in (aiocoap.Code.GET, aiocoap.Code.POST):
            return _reply(aiocoap.Code.METHOD_NOT_ALLOWED)
        feature = path[-1]
        if feature == "provision" and len(path) in (3, 4):
            if code != aiocoap.Code.POST:
                return _reply(aiocoap.Code.BAD_REQUEST)
            try:
                req = parse_request(request.payload)
            except ParseFailure as e:
                sim.store.event("provision", request=None, status=None, deviceName=None, error=str(e),
                                transport="coap")
                return _reply(aiocoap.Code.BAD_REQUEST)
            if sim.provision_delay_s:
                await asyncio.sleep(sim.provision_delay_s)
            status, reply, _name = sim._provision(req, "coap")
            return _reply(aiocoap.Code.CREATED if status == "SUCCESS" else aiocoap.Code.BAD_REQUEST, reply, text=True)
        if feature in ("telemetry", "attributes") and len(path) == 4:
            if code != aiocoap.Code.POST:
                return _reply(aiocoap.Code.BAD_REQUEST)
            outcome = sim._device_post(path[2], feature, request.payload, "coap")
            return _reply({"ok": aiocoap.Code.CREATED, "unauthorized": aiocoap.Code.UNAUTHORIZED}.get(
                outcome, aiocoap.Code.BAD_REQUEST))
        return _reply(aiocoap.Code.BAD_REQUEST)


async def start_coap(sim, host, port):
    """Bind the CoAP server on tbsim's loop; returns (context, the real port)."""
    context = await aiocoap.Context.create_server_context(_Root(sim), bind=(host, port), transports=["udp6"])
    # aiocoap keeps the bound socket on its UDP transport; port 0 means "any free port", so read it back.
    transport = context.request_interfaces[0].token_interface.message_interface.transport
    return context, transport.get_extra_info("socket").getsockname()[1]
