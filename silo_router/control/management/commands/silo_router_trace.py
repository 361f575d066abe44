"""``manage.py silo_router_trace <capture-dir>``: waterfalls of traces that sentry-sdk captured to files.

The directory is where :class:`silo_router.tracing.capture.CaptureTransport` wrote one
file per envelope, from as many processes as shared it (control's web processes and
workers, the regions). Without options the latest trace is drawn; ``--trace`` picks
one by id (or a prefix of it), ``--op`` keeps traces with a span of that op (prefix),
``--last N`` draws the N latest, ``--list`` lists them instead.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from silo_router import redaction
from silo_router.tracing import capture, names, waterfall

#: The shortest trace id prefix ``--trace`` accepts.
MIN_TRACE_PREFIX = 6


class Command(BaseCommand):
    requires_system_checks: list[str] = []  # it reads files only: a silo's settings problems do not matter here
    help = (
        "Print waterfalls (spans, start offsets, durations, Slack's deadline line) of traces captured "
        "by silo_router.tracing.capture.CaptureTransport in a directory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("capture_dir", help="the directory the capture transport writes envelopes to")
        chosen = parser.add_mutually_exclusive_group()
        chosen.add_argument("--trace", help=f"a trace id, or at least {MIN_TRACE_PREFIX} of its first digits")
        chosen.add_argument("--last", type=int, default=1, metavar="N", help="the N latest traces (default 1)")
        parser.add_argument("--op", help="only traces with a span of this op, or an op under it (silo_router.region)")
        parser.add_argument("--list", action="store_true", help="one line per trace instead of waterfalls")
        parser.add_argument(
            "--all", action="store_true", help=f"also the spans hidden by default ({', '.join(waterfall.QUIET_OPS)})"
        )
        parser.add_argument("--width", type=int, default=waterfall.BAR_WIDTH, help="the bar's width in characters")

    def handle(self, *args: Any, **options: Any) -> None:
        directory = Path(options["capture_dir"])
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory")
        if options["last"] < 1:
            raise CommandError("--last must be at least 1")
        try:
            found = list(capture.traces(directory).values())
        except capture.CaptureError as exc:
            raise CommandError(str(exc)) from exc
        if options["op"]:
            found = [trace for trace in found if trace.find(options["op"])]
        if options["trace"]:
            found = [self._one(found, options["trace"])]
        else:
            found = found[-options["last"] :]
        if not found:
            raise CommandError(
                f"no trace in {directory}" + (f" with a span of op {options['op']}" if options["op"] else "")
            )
        if options["list"]:
            for trace in found:
                self._write(_summary(trace))
            return
        hide = () if options["all"] else waterfall.QUIET_OPS
        for number, trace in enumerate(found):
            if number:
                self._write("")
            drawn = waterfall.build(trace, hide=hide, scrub=redaction.scrub_text)
            self._write(drawn.render(width=options["width"]))

    @staticmethod
    def _one(traces: list[capture.Trace], wanted: str) -> capture.Trace:
        wanted = wanted.strip().lower().replace("-", "")
        if len(wanted) < MIN_TRACE_PREFIX:
            raise CommandError(f"--trace needs at least {MIN_TRACE_PREFIX} digits of the trace id")
        matching = [trace for trace in traces if trace.trace_id.startswith(wanted)]
        if not matching:
            raise CommandError(f"no captured trace {wanted}")
        if len(matching) > 1:
            raise CommandError(f"{len(matching)} traces start with {wanted}: give more digits")
        return matching[0]

    def _write(self, text: str) -> None:
        self.stdout.write(redaction.scrub_text(text))  # a capture made without the scrubbers prints none either


def _summary(trace: capture.Trace) -> str:
    """One line: trace id, start (UTC), duration, transactions, spans, the first library op."""
    started = datetime.datetime.fromtimestamp(trace.start, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    spans = trace.spans
    first = next((span for span in spans if names.is_integration_op(span.op)), spans[0])
    kind = next((str(span.attribute(names.KIND)) for span in spans if span.attribute(names.KIND)), "")
    description = redaction.scrub_text(first.description)[: waterfall.MAX_DESCRIPTION]
    return (
        f"{trace.trace_id}  {started}  {(trace.end - trace.start) * 1000:8.1f} ms  "
        f"{len(trace.transactions):3} tx {len(spans):4} spans  {first.op}  {description}"
        + (f"  [{kind}]" if kind else "")
    )
