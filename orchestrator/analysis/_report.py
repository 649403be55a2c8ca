"""summary.json, report.md, a self-contained report.html and the terminal summary.

All three human-readable forms are rendered from the summary dict through one list of
sections, so they cannot disagree; only the markup differs. The HTML embeds its PNGs as base64
data URIs so that it survives being mailed or uploaded on its own.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.analysis import _format, _optimal
from orchestrator.analysis._compute import TIMES
from orchestrator.analysis._table import DATA, MODEL, SEED, WORKERS

__all__ = ["jsonable", "render_terminal", "write_html", "write_markdown", "write_summary"]


@dataclass(frozen=True)
class _Section:
    title: str
    paragraphs: tuple[str, ...] = ()
    bullets: tuple[str, ...] = ()
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    plots: tuple[dict[str, str], ...] = ()


def write_summary(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


def jsonable(value: Any) -> Any:
    """numpy scalars to Python, NaN to null (JSON has no NaN), tuples and paths to lists/str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    value = _format.plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_terminal(summary: dict[str, Any]) -> str:
    """The recommendation, one row per model at the largest data fraction, then warnings."""
    lines = [
        f"Scaling analysis of {summary['experiment']['name']} ({summary['experiment']['metric']})"
    ]
    lines += [f"  {a['question']}: {a['text']}" for a in summary["recommendation"].values()]
    header, rows = _model_rows(summary)
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    lines.append("")
    for row in (header, *rows):
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    warnings = _warnings(summary)
    if warnings:
        lines += ["", *warnings]
    trials = summary["trials"]
    status = f"{trials['finished']} of {trials['in_results']} trials finished"
    if trials["failed"]:
        status += f", {trials['failed']} failed"
    if summary["missing_cells"]:
        status += f"; {len(summary['missing_cells'])} cell(s) missing seeds"
    lines += ["", status, f"Report: {summary['outputs']['report.html']}"]
    return "\n".join(lines)


def _cell_name(cell: dict[str, Any], extra: Sequence[str] = ()) -> str:
    """ "bert-mini at 25 % data, 2 workers" (and any extra axes), for warnings and lists."""
    text = f"{cell[MODEL]} at {_format.fraction(cell[DATA])} data"
    if WORKERS in cell:
        text += f", {_format.workers(cell[WORKERS])}"
    return text + "".join(f", {a.rsplit('.', 1)[-1]}={_format.value(cell[a])}" for a in extra)


def _warnings(summary: dict[str, Any]) -> list[str]:
    """Outliers, cells that did not learn, cells read elsewhere, the compute-optimal answer."""
    extra, metric = summary["experiment"]["extra_axes"], summary["experiment"]["metric"]
    lines = [
        f"Outlier: {_cell_name(o, extra)}, seed {_format.value(o[SEED])}: {metric} "
        f"{o['metric']:.4f}, {_off(o)} (down-weighted by the robust fit)"
        for o in summary["outliers"]
    ]
    lines += [
        f"Timing outlier: {_cell_name(o, extra)}, seed {_format.value(o[SEED])}: {_off(o)}"
        for o in summary["timing_outliers"]
    ]
    if summary["did_not_learn"]:
        lines.append(
            "Did not learn (within noise of chance; left out of the fits): "
            + "; ".join(
                f"{_cell_name(c, extra)} ({_format.metric(c['metric_mean'])} vs chance "
                f"{_format.metric(c['chance'])})"
                for c in summary["did_not_learn"]
            )
        )
    # One line per model read at more workers, with its fractions and the first failure.
    by_model: dict[tuple, list[dict[str, Any]]] = {}
    for q in summary["quality_workers"]:
        key = (q["cell"][MODEL], *(q["cell"][a] for a in extra), q["workers"])
        by_model.setdefault(key, []).append(q)
    for (model, *_, workers), cells in by_model.items():
        first = cells[0]
        fractions = ", ".join(_format.fraction(q["cell"][DATA]) for q in cells)
        lines.append(
            f"Read at {_format.workers(workers)}: {model} at {fractions} data "
            f"(at {_format.workers(first['reference_workers'])}: {first['reason']})"
        )
    optimal = summary["compute_optimal"]
    if optimal:
        lines += [
            _optimal.describe(a, optimal["flops_budget"], summary["experiment"]["error"])
            for a in optimal["allocations"]
        ]
    return lines


def _off(outlier: dict[str, Any]) -> str:
    """How far off which law: "52× the noise above the joint law (and 2 more)". Above is a
    worse error, or a slower time, than the law predicts."""
    z, fits = outlier["residual_in_noise_units"], outlier["flagged_by"]
    more = f" (and {len(fits) - 1} more)" if len(fits) > 1 else ""
    return f"{abs(z):.3g}× the noise {'above' if z > 0 else 'below'} the {fits[0]}{more}"


def _model_rows(summary: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """One row per model at the largest fraction: its best cell over any extra axes."""
    extra = summary["experiment"]["extra_axes"]
    best: dict[str, dict[str, Any]] = {}
    for c in summary["cells"]:
        at_full = c["quality"] and c[DATA] == summary["full_fraction"]
        if at_full and (c[MODEL] not in best or c["error_mean"] < best[c[MODEL]]["error_mean"]):
            best[c[MODEL]] = c
    header = (
        "model",
        *extra,
        "params",
        summary["experiment"]["metric"],
        "seeds",
        "workers",
        "wall/run",
        summary["cost"]["unit"] + "/run",
    )
    rows = [
        (
            c[MODEL],
            *(_format.value(c[a]) for a in extra),
            _format.count(c["params"]),
            _format.metric(c["metric_mean"], c["metric_std"])
            + ("" if c["learned"] else " (did not learn)"),
            str(c["n"]),
            str(c[WORKERS]),
            _format.seconds(c["trial_wall_s"]),
            _format.hours(c["hours"]),
        )
        for c in sorted(best.values(), key=lambda c: c["params"])
    ]
    return header, rows


def _sections(summary: dict[str, Any]) -> list[_Section]:
    experiment, trials = summary["experiment"], summary["trials"]
    sections = [
        _Section(
            "Recommendation",
            bullets=tuple(
                f"**{a['question']}:** {a['text']}" for a in summary["recommendation"].values()
            ),
        )
    ]
    header, rows = _model_rows(summary)
    sections.append(
        _Section(
            f"Models at {_format.fraction(summary['full_fraction'])} data, "
            f"{_format.workers(summary['reference_workers'])}",
            header=header,
            rows=tuple(rows),
        )
    )
    sweep = [
        f"Experiment `{experiment['name']}`: metric **{experiment['metric']}**, error = "
        f"{experiment['error']}; axes {', '.join(experiment['axes'])}; "
        f"seeds {experiment['seeds']}.",
        f"{trials['finished']} of {trials['in_results']} trials in results.csv finished "
        f"({experiment['num_trials_planned']} planned), {trials['failed']} failed, "
        f"{trials['unfinished']} unfinished. Quality is read per model × data cell at "
        f"{_format.workers(summary['reference_workers'])}, the fewest that ran, or at the "
        "fewest that cell finished with (listed below).",
        f"Chance level: {summary['chance']['source']}. A cell within two standard errors of "
        "chance did not learn: it is drawn hollow and grey and left out of every fit.",
        *summary["notes"],
    ]
    sections.append(_Section("Sweep", paragraphs=tuple(sweep), bullets=tuple(_warnings(summary))))
    if summary["missing_cells"]:
        sections.append(
            _Section(
                "Failed or missing cells",
                header=("cell", "seeds ok", "reason"),
                rows=tuple(
                    (
                        ", ".join(f"{k}={_format.value(v)}" for k, v in m["cell"].items()),
                        f"{m['seeds_ok']}/{m['seeds_expected']}",
                        m["reason"],
                    )
                    for m in summary["missing_cells"]
                ),
            )
        )
    if summary["absent_cells"]:
        sections.append(
            _Section(
                "Model × data cells with no usable trial at any worker count",
                header=("cell", "reason"),
                rows=tuple(
                    (_cell_name(a["cell"], experiment["extra_axes"]), a["reason"])
                    for a in summary["absent_cells"]
                ),
            )
        )
    sections += [
        _Section(p["title"], paragraphs=(p["caption"],), plots=(p,))
        for p in summary["plots"].values()
    ]
    sections.append(_fits_section(summary["fits"]))
    sections.append(_compute_section(summary))
    sections += [
        s
        for s in (
            _convergence_section(summary),
            _inference_section(summary),
            _utilisation_section(summary),
        )
        if s is not None
    ]
    sections.append(_cost_section(summary))
    sections.append(_cells_section(summary))
    return sections


def _fits_section(fits: dict[str, Any]) -> _Section:
    rows, notes = [], []
    entries = (
        [("model axis", c) for c in fits["model_axis"]["curves"]]
        + [("data axis", c) for c in fits["data_axis"]["curves"]]
        + [("joint", j) for j in fits["joint"]]
        + [(f"Amdahl ({time})", c) for time in TIMES for c in fits["amdahl"].get(time, [])]
    )
    for axis, entry in entries:
        series = (
            ", ".join(f"{k.rsplit('.', 1)[-1]}={_format.value(v)}" for k, v in entry["key"].items())
            or "all"
        )
        fit = entry["fit"]
        if fit is None:
            rows.append((axis, series, "refused", entry["refusal"], "", "", ""))
            continue
        exponents = [k for k in ("alpha", "beta", "s") if k in fit["params"]]
        ci = fit["ci95"] or {}
        shown = "; ".join(
            f"{k} = {fit['params'][k]:.3g}"
            + (f" [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" if k in ci else "")
            for k in exponents
        )
        holdouts = entry.get("leave_largest_out")
        rows.append(
            (
                axis,
                series,
                fit["equation"],
                shown,
                f"{fit['r2']:.3f}",
                _holdout_text(holdouts if isinstance(holdouts, list) else [holdouts]),
                str(fit["n_points"]),
            )
        )
        notes += [f"{axis}, {series}: {n}" for n in fit["notes"]]
    notes += [
        fits[axis]["refusal"]
        for axis in ("model_axis", "data_axis", "amdahl")
        if fits[axis]["refusal"]
    ]
    return _Section(
        "Fitted laws",
        paragraphs=(
            "Fitted on log error with a robust (Huber) loss whose scale is the seeds' spread, so "
            "one diverged trial pulls a law by a bounded amount and is flagged by name. Exponents "
            "with 95 % intervals in brackets, from refits to the fitted curve plus resampled "
            "residuals (a residual bootstrap; Amdahl fits give each seed its own one-worker "
            "time). Leave-largest-out: the law refitted without the largest model or data size "
            "predicts it; the error of that prediction says how far to trust an extrapolation. "
            "With two or three seeds and one decade per axis, read them as rough.",
            *notes,
        ),
        header=(
            "axis",
            "series",
            "law",
            "exponent [95 % CI]",
            "R²",
            "leave-largest-out error",
            "trials",
        ),
        rows=tuple(rows),
    )


def _holdout_text(holdouts: list[dict[str, Any] | None]) -> str:
    parts = []
    for h in holdouts:
        if h is None:
            continue
        if "refusal" in h:
            parts.append("–")
            continue
        parts.append(f"{h['held_out']}: {100 * h['mean_abs_relative_error']:.1f} %")
    return ", ".join(parts)


def _compute_section(summary: dict[str, Any]) -> _Section:
    check = summary["compute"]["strong_scaling"]
    paragraphs = [f"Strong-scaling check: **{check['status']}** ({check['message']})."]
    paragraphs += [
        f"Flagged: {f[MODEL]} at {_format.fraction(f[DATA])} data, {f[WORKERS]} workers: "
        f"{summary['experiment']['metric']} {f['metric_mean']:.4f} vs "
        f"{f['reference_metric_mean']:.4f} with {f['reference_workers']} (p = {f['p_value']:.2g}, "
        f"Holm-adjusted {f['p_holm']:.2g}); check the batch and learning-rate arithmetic for "
        "this worker count."
        for f in check["flags"]
    ]
    rows = tuple(
        (
            c[MODEL],
            _format.fraction(c[DATA]),
            str(c[WORKERS]),
            _format.seconds(c["train_time_s"]),
            _format.seconds(c["trial_wall_s"]),
            f"{c['speedup_train_time_s']:.2f}×",
            f"{c['speedup_trial_wall_s']:.2f}×",
            f"{c['efficiency_trial_wall_s']:.0%}",
            f"{c['examples_per_s_per_worker']:.1f}",
        )
        for c in summary["compute"]["cells"]
    )
    return _Section(
        "Compute",
        paragraphs=tuple(paragraphs),
        header=(
            "model",
            "data",
            "workers",
            "train loop",
            "whole trial",
            "speed-up (loop)",
            "speed-up (trial)",
            "efficiency (trial)",
            "examples/s/worker",
        ),
        rows=rows,
    )


def _optional(value: Any, shown: str) -> str:
    """``shown`` for a value, "–" for a missing one (JSON null)."""
    return "–" if value is None else shown


def _convergence_section(summary: dict[str, Any]) -> _Section | None:
    convergence = summary["convergence"]
    if convergence is None:
        return None
    extra = summary["experiment"]["extra_axes"]
    rows = tuple(
        (
            c[MODEL],
            _format.fraction(c[DATA]),
            str(c[WORKERS]),
            *(_format.value(c[a]) for a in extra),
            f"{c['n_reached']}/{c['n']}",
            _optional(c["time_to_s"], _format.seconds(c["time_to_s"] or 0.0)),
            _optional(c["examples_to"], _format.count(c["examples_to"] or 0.0)),
            _optional(c["steps_to"], f"{c['steps_to'] or 0:.0f}"),
        )
        for c in convergence["cells"]
    )
    return _Section(
        "Convergence",
        paragraphs=(
            f"Level: {convergence['level']}. For each cell, how many seeds' evaluations reached "
            "it, and the mean training seconds, training examples (all workers) and optimizer "
            "steps at the first evaluation that did (over the seeds that reached it; – where "
            "none did). `--target` times another level.",
        ),
        header=(
            "model",
            "data",
            "workers",
            *extra,
            "reached",
            "training time",
            "examples",
            "steps",
        ),
        rows=rows,
    )


def _inference_section(summary: dict[str, Any]) -> _Section | None:
    inference = summary["inference"]
    if not inference["latency"] and not inference["throughput"]:
        return None
    extra = summary["experiment"]["extra_axes"]
    rows = tuple(
        (
            r[MODEL],
            *(_format.value(r[a]) for a in extra),
            r["device"],
            str(r["batch_size"]),
            f"{r['p50_ms']:.3g}",
            f"{r['p95_ms']:.3g}",
            f"{r['p99_ms']:.3g}",
            str(r["batches"]),
            str(r["trials"]),
        )
        for r in inference["latency"]
    )
    throughput = "; ".join(
        f"{r[MODEL]} with {_format.workers(r[WORKERS])}: {r['examples_per_s']:.4g} examples/s"
        for r in inference["throughput"]
    )
    return _Section(
        "Inference",
        paragraphs=(
            "Latency per batch on one worker, in ms (median over the model's trials; each "
            "trial's percentiles are over its timed batches, so a p99 of fewer than ~100 "
            "batches is close to their maximum). `--max-latency-ms` recommends a model under a "
            "budget.",
            *([f"Throughput at the eval batch: {throughput}."] if throughput else []),
        ),
        header=(
            "model",
            *extra,
            "device",
            "batch",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "timed batches",
            "trials",
        ),
        rows=rows,
    )


def _utilisation_section(summary: dict[str, Any]) -> _Section | None:
    cells = summary["utilisation"]
    if not cells:
        return None
    extra = summary["experiment"]["extra_axes"]

    def gib(value: float | None) -> str:
        return _optional(value, f"{value or 0:.3g}")

    rows = tuple(
        (
            c[MODEL],
            _format.fraction(c[DATA]),
            str(c[WORKERS]),
            *(_format.value(c[a]) for a in extra),
            c["device"],
            _optional(c["model_flops_per_s"], _format.count(c["model_flops_per_s"] or 0.0)),
            _optional(c["mfu"], f"{100 * (c['mfu'] or 0):.1f} %"),
            gib(c["peak_gpu_memory_gib"]),
            gib(c["peak_host_rss_gib"]),
            _optional(c["inference_examples_per_s"], f"{c['inference_examples_per_s'] or 0:.4g}"),
        )
        for c in cells
    )
    return _Section(
        "Utilisation",
        paragraphs=(
            "Per cell (seed means; peaks are the largest over seeds and workers): model FLOP/s "
            "per worker over training ((6 × non-embedding params + 12 × layers × hidden × "
            "tokens per example) × tokens/s ÷ workers), MFU against the device's dense peak "
            "(GPU only: empty on CPU), peak GPU memory allocated by torch and peak host RSS of "
            "a worker process, and inference examples/s.",
        ),
        header=(
            "model",
            "data",
            "workers",
            *extra,
            "device",
            "FLOP/s/worker",
            "MFU",
            "GPU GiB",
            "RSS GiB",
            "inference ex/s",
        ),
        rows=rows,
    )


def _cost_section(summary: dict[str, Any]) -> _Section:
    cost = summary["cost"]
    paragraphs = [
        f"{_format.hours(cost['total_hours'])} {cost['unit']} in all "
        f"({_format.hours(cost['hours_on_failed_trials'])} on failed trials); "
        f"{cost['unit']} = {cost['hours_formula']}. FLOPs = {cost['flops_formula']}."
    ]
    if cost["total_money"] is not None:
        paragraphs.append(
            f"At {_format.money(cost['price_per_gpu_hour'])} per GPU-hour, applied to "
            f"{cost['unit']}: {_format.money(cost['total_money'])} in all."
        )
    rows = tuple(
        (
            f[MODEL],
            _format.fraction(f[DATA]),
            _format.count(f["flops"]),
            f"{f['metric_mean']:.4f}",
            _format.hours(f["hours"]),
        )
        for f in cost["frontier"]
    )
    return _Section(
        "Cost and the compute-quality frontier",
        paragraphs=tuple(paragraphs),
        header=("model", "data", "FLOPs", summary["experiment"]["metric"], cost["unit"] + "/run"),
        rows=rows,
    )


def _cells_section(summary: dict[str, Any]) -> _Section:
    extra = summary["experiment"]["extra_axes"]
    rows = tuple(
        (
            c[MODEL],
            _format.fraction(c[DATA]),
            str(c[WORKERS]),
            *(_format.value(c[a]) for a in extra),
            str(c["n"]),
            _format.metric(c["metric_mean"], c["metric_std"]),
            _judged(c),
            _format.seconds(c["train_time_s"]),
            _format.seconds(c["trial_wall_s"]),
            _format.hours(c["hours"]),
            _format.count(c["flops"]),
        )
        for c in summary["cells"]
    )
    return _Section(
        "Every cell (seed mean ± std; quality: fitted, did not learn, or – for a worker count "
        "the fits do not read)",
        header=(
            "model",
            "data",
            "workers",
            *extra,
            "seeds",
            summary["experiment"]["metric"],
            "quality",
            "train loop",
            "whole trial",
            summary["cost"]["unit"],
            "FLOPs",
        ),
        rows=rows,
    )


def _judged(cell: dict[str, Any]) -> str:
    """Whether the fits read this cell's quality, and whether it learned."""
    if not cell["learned"]:
        return "did not learn"
    return "fitted" if cell["quality"] else "–"


def write_markdown(summary: dict[str, Any], path: Path) -> None:
    out = [f"# Scaling report: {summary['experiment']['name']}", ""]
    for section in _sections(summary):
        out += [f"## {section.title}", ""]
        out += [line for p in section.paragraphs for line in (p, "")]
        out += [f"- {b}" for b in section.bullets] + ([""] if section.bullets else [])
        out += [f"![{p['title']}]({p['png']})" for p in section.plots] + (
            [""] if section.plots else []
        )
        if section.header:
            out.append("| " + " | ".join(section.header) + " |")
            out.append("|" + "---|" * len(section.header))
            out += [
                "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in section.rows
            ]
            out.append("")
    path.write_text("\n".join(out))


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; } img { max-width: 100%; border: 1px solid #eee; }
section.recommendation { background: #eef6ee; padding: 0.5em 1.2em; border-radius: 6px; }
"""


def write_html(summary: dict[str, Any], out_dir: Path, path: Path) -> None:
    name = html.escape(summary["experiment"]["name"])
    body = [f"<h1>Scaling report: {name}</h1>"]
    for section in _sections(summary):
        css = ' class="recommendation"' if section.title == "Recommendation" else ""
        body.append(f"<section{css}><h2>{html.escape(section.title)}</h2>")
        body += [f"<p>{_inline(p)}</p>" for p in section.paragraphs]
        if section.bullets:
            body.append(
                "<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in section.bullets) + "</ul>"
            )
        for plot in section.plots:
            data = base64.b64encode((out_dir / plot["png"]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(plot["title"])}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
        if section.header:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in section.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in section.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        body.append("</section>")
    path.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Scaling report: {name}</title><style>{_CSS}</style></head>"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _inline(text: str) -> str:
    """The two bits of Markdown the sections use, **bold** and `code`, as HTML."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
