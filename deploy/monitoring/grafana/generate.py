"""Grafana dashboards for comments-api, as code (grafana-foundation-sdk).

    python deploy/monitoring/grafana/generate.py          # rewrite dashboards/*.json
    python deploy/monitoring/grafana/generate.py --check  # exit 1 if they are stale

The generated JSON is committed (Grafana provisioning reads files); tests/test_monitoring.py
checks it equals this script's output and runs every panel query against a real Prometheus.
Queries use fixed windows ([5m]) instead of Grafana-only macros, so they run as-is there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, stat, table, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT_DIR = Path(__file__).parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
JOB = 'job="comments-api"'
# Probe and scrape routes are not reader traffic (same exclusion as the SLO rules).
USER = f'{JOB},route!~"/metrics|/healthz|/readyz|/healthcheck"'
SLO_TARGET = 0.999
ERROR_BUDGET = round(1 - SLO_TARGET, 6)
LATENCY_THRESHOLD = 0.5


def q(expr: str, legend: str = "", ref: str = "A") -> prom.Dataquery:
    query = prom.Dataquery().expr(expr).ref_id(ref).range()
    if legend:
        query = query.legend_format(legend)
    return query


class Layout:
    """Hands out stable panel ids, so regenerating never reshuffles them."""

    def __init__(self) -> None:
        self.next_id = 1

    def id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value

    def row(self, title: str) -> dashboard.Row:
        return dashboard.Row(title).id(self.id())

    def series(
        self,
        title: str,
        description: str,
        unit: str,
        *queries: prom.Dataquery,
        span: int = 12,
    ) -> timeseries.Panel:
        panel = (
            timeseries.Panel()
            .id(self.id())
            .title(title)
            .description(description)
            .datasource(DATASOURCE)
            .unit(unit)
            .span(span)
            .height(8)
        )
        for query in queries:
            panel = panel.with_target(query)
        return panel

    def stat(
        self, title: str, description: str, unit: str, query: prom.Dataquery, span: int = 6
    ) -> stat.Panel:
        return (
            stat.Panel()
            .id(self.id())
            .title(title)
            .description(description)
            .datasource(DATASOURCE)
            .unit(unit)
            .span(span)
            .height(4)
            .with_target(query)
        )


def overview() -> dashboard.Dashboard:
    lay = Layout()
    return (
        dashboard.Dashboard("comments-api")
        .uid("comments-api-overview")
        .description("RED metrics, saturation and business activity of comments-api.")
        .tags(["comments-api"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("utc")
        .with_row(lay.row("Traffic"))
        .with_panel(
            lay.stat(
                "Requests/s",
                "Reader and API traffic (probes and scrapes excluded).",
                "reqps",
                q(f"sum(job:comments_api_http_requests:rate5m{{{JOB}}})"),
            )
        )
        .with_panel(
            lay.stat(
                "Live workers",
                "gunicorn worker processes across instances.",
                "none",
                q(f"sum(comments_api_workers{{{JOB}}})"),
            )
        )
        .with_panel(
            lay.stat(
                "Targets up",
                "Instances Prometheus scrapes successfully.",
                "none",
                q(f"sum(up{{{JOB}}})"),
            )
        )
        .with_panel(
            lay.stat(
                "Instances ready",
                "Instances whose readiness check passed at the last scrape.",
                "none",
                q(f"sum(comments_api_ready{{{JOB}}})"),
            )
        )
        .with_panel(
            lay.series(
                "Requests/s by route",
                "Per route template and method.",
                "reqps",
                q(
                    "sum by (method, route) "
                    f"(job_route:comments_api_http_requests:rate5m{{{JOB}}})",
                    "{{method}} {{route}}",
                ),
            )
        )
        .with_panel(
            lay.series(
                "Responses/s by status",
                "All routes, by HTTP status code.",
                "reqps",
                q(
                    f"sum by (status) (job_status:comments_api_http_requests:rate5m{{{JOB}}})",
                    "{{status}}",
                ),
            )
        )
        .with_row(lay.row("Errors"))
        .with_panel(
            lay.series(
                "Server error ratio (SLI)",
                "Share of non-4xx requests answered with 5xx; the SLO allows 0.1%.",
                "percentunit",
                q(f"job:comments_api_slo_errors:ratio_rate5m{{{JOB}}}", "5xx ratio"),
                q(f"vector({ERROR_BUDGET})", "error budget (0.1%)", "B"),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Client errors/s by route",
                "4xx: bad input, missing content, rate limits. Not in the SLI.",
                "reqps",
                q(
                    "sum by (route, status) "
                    f'(rate(comments_api_http_requests_total{{{JOB},status=~"4.."}}[5m]))',
                    "{{status}} {{route}}",
                ),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Server refusals/s by reason",
                "What the server answered or cut off before or after the app, so the panels "
                "above never see it: unreadable or late requests (a slowloris is "
                "request-timeout) and clients that stopped taking their answers.",
                "reqps",
                q(
                    f"sum by (reason) (rate(comments_api_server_refusals_total{{{JOB}}}[5m]))",
                    "{{reason}}",
                ),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Database errors/s by cause",
                "Requests the app answered 503 (507: disk_full) because of the database. "
                "disk_full and refused (read-only, an id sequence behind max(id)) need an "
                "operator and alert; timeout, pool_exhausted and unavailable spend the "
                "error budget.",
                "reqps",
                q(
                    f"sum by (cause) (rate(comments_api_database_errors_total{{{JOB}}}[5m]))",
                    "{{cause}}",
                ),
                span=24,
            )
        )
        .with_row(lay.row("Latency"))
        .with_panel(
            lay.series(
                "Request duration percentiles",
                "p50 / p95 / p99 over all reader routes.",
                "s",
                q(f"job:comments_api_http_request_duration_seconds:p50_5m{{{JOB}}}", "p50"),
                q(f"job:comments_api_http_request_duration_seconds:p95_5m{{{JOB}}}", "p95", "B"),
                q(f"job:comments_api_http_request_duration_seconds:p99_5m{{{JOB}}}", "p99", "C"),
            )
        )
        .with_panel(
            lay.series(
                "p99 by route",
                "Slowest routes first to look at when the latency SLO burns.",
                "s",
                q(
                    f"job_route:comments_api_http_request_duration_seconds:p99_5m{{{JOB}}}",
                    "{{method}} {{route}}",
                ),
            )
        )
        .with_row(lay.row("Saturation"))
        .with_panel(
            lay.series(
                "Busy request slots",
                "Requests in flight against what the workers can take at once "
                "(the scrape itself counts as one).",
                "none",
                q(f"sum(comments_api_http_requests_in_flight{{{JOB}}})", "in flight"),
                q(f"sum(comments_api_worker_slots{{{JOB}}})", "slots (workers x threads)", "B"),
            )
        )
        .with_panel(
            lay.series(
                "Worker and DB pool saturation",
                "Fraction of request slots and of pooled DB connections in use.",
                "percentunit",
                q(f"job:comments_api_worker_saturation:ratio{{{JOB}}}", "workers"),
                q(f"job:comments_api_db_pool_utilization:ratio{{{JOB}}}", "db pool", "B"),
            )
        )
        .with_panel(
            lay.series(
                "DB connections",
                "Checked out of the pools vs configured pool size (overflow can exceed it).",
                "none",
                q(
                    f"sum by (instance) (comments_api_db_pool_checked_out{{{JOB}}})",
                    "checked out {{instance}}",
                ),
                q(
                    f"sum by (instance) (comments_api_db_pool_size{{{JOB}}})",
                    "pool size {{instance}}",
                    "B",
                ),
            )
        )
        .with_panel(
            lay.series(
                "DB query p99 by operation",
                "Statement execution time as seen by the app.",
                "s",
                q(
                    "histogram_quantile(0.99, sum by (operation, le) "
                    f"(rate(comments_api_db_query_duration_seconds_bucket{{{JOB}}}[5m])))",
                    "{{operation}}",
                ),
            )
        )
        .with_row(lay.row("Business"))
        .with_panel(
            lay.stat(
                "Comments created (24h)",
                "Stored comments, all APIs.",
                "none",
                q(f"sum(increase(comments_api_comments_created_total{{{JOB}}}[24h]))"),
                span=8,
            )
        )
        .with_panel(
            lay.stat(
                "Comments rejected (24h)",
                "Submissions refused (validation, limits, duplicates...).",
                "none",
                q(f"sum(increase(comments_api_comments_rejected_total{{{JOB}}}[24h]))"),
                span=8,
            )
        )
        .with_panel(
            lay.stat(
                "Moderation actions (24h)",
                "Comments affected by moderators.",
                "none",
                q(f"sum(increase(comments_api_moderation_actions_total{{{JOB}}}[24h]))"),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Comments created/s",
                "By API and the status the comment got (published or pending moderation).",
                "ops",
                q(
                    "sum by (api, status) "
                    f"(rate(comments_api_comments_created_total{{{JOB}}}[5m]))",
                    "{{api}} {{status}}",
                ),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Rejected/s by reason",
                "Why submissions fail; a jump in one reason points at the cause.",
                "ops",
                q(
                    f"sum by (reason) (job_reason:comments_api_comments_rejected:rate5m{{{JOB}}})",
                    "{{reason}}",
                ),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Moderation actions/s",
                "By action.",
                "ops",
                q(
                    f"sum by (action) (job_action:comments_api_moderation_actions:rate5m{{{JOB}}})",
                    "{{action}}",
                ),
                span=8,
            )
        )
        .with_row(lay.row("Build"))
        .with_panel(
            table.Panel()
            .id(lay.id())
            .title("Running builds")
            .description("Version and git revision per instance.")
            .datasource(DATASOURCE)
            .span(24)
            .height(5)
            .with_target(
                prom.Dataquery()
                .expr(f"comments_api_build_info{{{JOB}}}")
                .ref_id("A")
                .instant()
                .format(PromQueryFormat.TABLE)
            )
        )
    )


def slo() -> dashboard.Dashboard:
    lay = Layout()
    budget = ERROR_BUDGET
    return (
        dashboard.Dashboard("comments-api SLO")
        .uid("comments-api-slo")
        .description(
            "Availability SLO: 99.9% of non-4xx requests succeed over 30 days. "
            "Latency objective: p99 under 500 ms."
        )
        .tags(["comments-api", "slo"])
        .refresh("1m")
        .time("now-7d", "now")
        .timezone("utc")
        .with_row(lay.row("Availability (30 days)"))
        .with_panel(
            lay.stat(
                "Availability, 30 days",
                "Share of non-4xx requests that did not fail.",
                "percentunit",
                q(f"1 - job:comments_api_slo_errors:ratio_rate30d{{{JOB}}}"),
                span=8,
            )
        )
        .with_panel(
            lay.stat(
                "Error budget left, 30 days",
                "1 = untouched, 0 = spent, negative = SLO missed.",
                "percentunit",
                q(f"1 - job:comments_api_slo_errors:ratio_rate30d{{{JOB}}} / {budget}"),
                span=8,
            )
        )
        .with_panel(
            lay.stat(
                "Alerts firing",
                "comments-api alerts currently firing.",
                "none",
                q('count(ALERTS{alertname=~"CommentsApi.*",alertstate="firing"}) or vector(0)'),
                span=8,
            )
        )
        .with_panel(
            lay.series(
                "Burn rate by window",
                "Error ratio divided by the budget: 1 spends it in exactly 30 days; "
                "pages at 14.4 (1h) and 6 (6h), tickets at 3 (1d) and 1 (3d).",
                "none",
                q(f"job:comments_api_slo_errors:ratio_rate1h{{{JOB}}} / {budget}", "1h"),
                q(f"job:comments_api_slo_errors:ratio_rate6h{{{JOB}}} / {budget}", "6h", "B"),
                q(f"job:comments_api_slo_errors:ratio_rate1d{{{JOB}}} / {budget}", "1d", "C"),
                q(f"job:comments_api_slo_errors:ratio_rate3d{{{JOB}}} / {budget}", "3d", "D"),
                span=24,
            )
        )
        .with_panel(
            lay.series(
                "Error ratio, short windows",
                "What the fast-burn alert pairs with its long windows.",
                "percentunit",
                q(f"job:comments_api_slo_errors:ratio_rate5m{{{JOB}}}", "5m"),
                q(f"job:comments_api_slo_errors:ratio_rate30m{{{JOB}}}", "30m", "B"),
                q(f"job:comments_api_slo_errors:ratio_rate2h{{{JOB}}}", "2h", "C"),
            )
        )
        .with_panel(
            lay.series(
                "Requests/s in the SLI",
                "Non-4xx reader requests: the denominator of the SLI.",
                "reqps",
                q(
                    f'sum(rate(comments_api_http_requests_total{{{USER},status!~"4.."}}[5m]))',
                    "requests",
                ),
            )
        )
        .with_row(lay.row("Latency objective"))
        .with_panel(
            lay.series(
                "p99 against the 500 ms objective",
                "The latency alert fires after 10 minutes above the line.",
                "s",
                q(f"job:comments_api_http_request_duration_seconds:p99_5m{{{JOB}}}", "p99"),
                q(f"vector({LATENCY_THRESHOLD})", "objective", "B"),
                span=24,
            )
        )
    )


def _plain(board: dashboard.Dashboard) -> dict[str, object]:
    data: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for panel in data.get("panels", []):  # type: ignore[attr-defined]
        # The SDK leaves unset panel options as null; Grafana expects an object.
        if panel.get("options") is None:
            panel["options"] = {}
    return data


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    boards = {"comments-api-overview.json": overview(), "comments-api-slo.json": slo()}
    return {
        name: json.dumps(_plain(board), indent=2, sort_keys=True) + "\n"
        for name, board in boards.items()
    }


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if "--check" in argv:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale dashboards (run generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
