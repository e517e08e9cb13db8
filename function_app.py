"""Azure Functions bindings only (contract section 7); every decision lives in gateway/."""

import azure.functions as func

from gateway.config import QUEUE_NAME
from gateway.functions import PLATFORM_BODY_LIMIT, deliver_message, measure_queue, services, sweep_retention
from gateway.intake.http import create_app

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
_http = func.AsgiMiddleware(create_app(services, max_body_bytes=PLATFORM_BODY_LIMIT))


@app.route(route="{*path}", auth_level=func.AuthLevel.ANONYMOUS)
async def http_intake(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await _http.handle_async(req, context)


@app.queue_trigger(arg_name="msg", queue_name=QUEUE_NAME, connection="SCANGW_STORAGE")
async def deliver(msg: func.QueueMessage) -> None:
    await deliver_message(msg.get_body())


@app.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False, use_monitor=True)
async def retention(timer: func.TimerRequest) -> None:
    await sweep_retention()


@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False, use_monitor=False)
async def queue_age(timer: func.TimerRequest) -> None:
    await measure_queue()
