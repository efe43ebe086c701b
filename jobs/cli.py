"""The ``activealign`` command line: one command per verb, each ``--config`` plus dotted overrides.

Every command accepts ``--config FILE`` and any number of ``--section.key VALUE`` overrides, e.g.
``activealign run --config configs/tiny.yaml --train.lr 1e-4 --loop.rounds 3``.

Exit codes: 0 success, 2 bad input (config, data, model path), 3 a service (oracle, label store,
cluster) failed, 130 interrupted, 1 anything unexpected.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from system.config import Config, dump_config, load_config, overrides_from_args
from system.config_docs import config_markdown
from system.errors import ActiveAlignError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Active preference alignment of language models on Ray (ActiveDPO, ADPO, ADPO+; DPO/IPO/MPO).",
)
WITH_OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
CONFIG_OPTION = typer.Option(Path("configs/tiny.yaml"), "--config", "-c", help="YAML config file.")


def _config(config_path: Path, ctx: typer.Context) -> Config:
    return load_config(config_path, overrides_from_args(ctx.args))


def _dispatch(module: str, **kwargs: Any) -> None:
    """Run ``jobs.<module>.main(**kwargs)`` and turn its result into an exit code."""
    code = importlib.import_module(f"jobs.{module}").main(**kwargs)
    raise typer.Exit(int(code or 0))


@app.command(context_settings=WITH_OVERRIDES)
def run(
    ctx: typer.Context,
    config: Path = CONFIG_OPTION,
    resume: Path | None = typer.Option(None, help="Continue the run stored in this run directory."),
    overwrite: bool = typer.Option(
        False, help="Let a fresh run replace an earlier run's outputs in loop.run_dir (its label store is kept)."
    ),
    new_mlflow_run: bool = typer.Option(
        False, help="With --resume: log into a new MLflow run instead of the saved one (e.g. a copied run directory)."
    ),
) -> None:
    """Run the active loop: generate → featurise → select → label → train → sync → evaluate, per round."""
    if resume is not None and not (resume / "config.yaml").exists():
        raise ActiveAlignError(f"--resume {resume}: no config.yaml there (not a run directory)")
    if new_mlflow_run and resume is None:
        raise ActiveAlignError("--new-mlflow-run: only with --resume (a fresh run always starts a new MLflow run)")
    cfg = load_config(resume / "config.yaml", overrides_from_args(ctx.args)) if resume else _config(config, ctx)
    _dispatch("active_loop", config=cfg, resume=resume, overwrite=overwrite, new_mlflow_run=new_mlflow_run)


@app.command(context_settings=WITH_OVERRIDES)
def select(
    ctx: typer.Context,
    pool: Path = typer.Option(..., help="Candidate pairs (Parquet, JSONL, hf:NAME?…): text columns or numeric `phi`."),
    out: Path = typer.Option(..., help="Where to write the selected pairs (Parquet or JSONL) in pick order."),
    config: Path = CONFIG_OPTION,
    strategy: str | None = typer.Option(None, help="Selection strategy (default: selection.strategy)."),
    budget: int | None = typer.Option(None, help="How many pairs to select (default: selection.budget)."),
    batch_size: int | None = typer.Option(
        None, help="Labels (a `label` column) are revealed after each batch of this many picks."
    ),
) -> None:
    """Offline selection from a fixed pool; labels of unselected pairs are never read."""
    _dispatch(
        "select", config=_config(config, ctx), pool=pool, out=out, strategy=strategy, budget=budget,
        batch_size=batch_size,
    )


@app.command(context_settings=WITH_OVERRIDES)
def train(
    ctx: typer.Context,
    data: Path = typer.Option(..., help="TRL preference data (prompt/chosen/rejected): JSONL, Parquet or hf:NAME?…"),
    out: Path = typer.Option(Path("runs/train"), help="Output directory: checkpoints and the final adapter."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Standalone DPO/IPO/MPO training (Ray Train + DeepSpeed) on a preference dataset; resumes from `out`."""
    _dispatch("train", config=_config(config, ctx), data=data, out=out)


@app.command(context_settings=WITH_OVERRIDES)
def serve(ctx: typer.Context, config: Path = CONFIG_OPTION) -> None:
    """Start the oracle/annotation endpoint (Ray Serve, 127.0.0.1 by default, bearer-token auth)."""
    _dispatch("serve", config=_config(config, ctx))


@app.command(context_settings=WITH_OVERRIDES)
def generate(
    ctx: typer.Context,
    prompts: Path = typer.Option(..., help="Prompts (a `prompt` column): JSONL, Parquet or hf:NAME?split=…"),
    out: Path = typer.Option(..., help="Where to write the sampled responses (JSONL or Parquet)."),
    config: Path = CONFIG_OPTION,
    adapter: Path | None = typer.Option(None, help="LoRA adapter directory to generate with."),
) -> None:
    """Sample responses with the generation fleet (vLLM or HF engine)."""
    _dispatch("generate", config=_config(config, ctx), prompts=prompts, out=out, adapter=adapter)


@app.command(context_settings=WITH_OVERRIDES)
def evaluate(
    ctx: typer.Context,
    config: Path = CONFIG_OPTION,
    adapter: Path | None = typer.Option(None, help="LoRA adapter directory to evaluate (default: the base)."),
) -> None:
    """Oracle reward of generations (greedy or sampled) on held-out prompts and win-rate vs the reference policy."""
    _dispatch("evaluate", config=_config(config, ctx), adapter=adapter)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories to compare."),
    out: Path = typer.Option(Path("runs/report"), help="Directory for report.html and report.png."),
) -> None:
    """Compare runs: reward vs labels per strategy, as HTML + PNG."""
    _dispatch("report", run_dirs=run_dirs, out=out)


@app.command(context_settings=WITH_OVERRIDES)
def export(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="Output file (labels) or directory (adapter)."),
    config: Path = CONFIG_OPTION,
    what: str = typer.Option("labels", help="labels (what training uses: machine verdicts, each human pair's "
                                            "aggregate) | answers (every person's answer, with its annotator) | "
                                            "adapter"),
    fmt: str = typer.Option("trl-jsonl", "--format", help="trl-jsonl | trl-parquet | label-studio | argilla"),
    run_dir: Path | None = typer.Option(None, help="Run directory to export from (default: loop.run_dir)."),
) -> None:
    """Export collected labels or people's answers (TRL, Label Studio, Argilla) or the latest trained adapter."""
    _dispatch("export", config=_config(config, ctx), out=out, what=what, fmt=fmt, run_dir=run_dir)


@app.command("import", context_settings=WITH_OVERRIDES)
def import_(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The file to import."),
    fmt: str = typer.Option(..., "--format", help="trl-jsonl | trl-parquet | label-studio | argilla"),
    config: Path = CONFIG_OPTION,
    round: int = typer.Option(0, min=0, help="Round of TRL rows (the other formats carry their own)."),
    oracle: str = typer.Option("trl", help="Oracle name of TRL rows (the other formats carry their own)."),
) -> None:
    """Import labels (TRL preference data, a Label Studio export, Argilla records) into the label store."""
    _dispatch("label_import", config=_config(config, ctx), path=path, fmt=fmt, round=round, oracle=oracle)


annotators_app = typer.Typer(no_args_is_help=True, help="The people who answer tasks, each with a personal token.")
app.add_typer(annotators_app, name="annotators")


@annotators_app.command("add", context_settings=WITH_OVERRIDES)
def annotators_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The annotator's name (letters, digits, '.', '_', '-', inner spaces)."),
    role: str = typer.Option("annotator", help="annotator | reviewer"),
    config: Path = CONFIG_OPTION,
) -> None:
    """Add an annotator to the label store (oracle.label_store_url) and print their token once."""
    from jobs.annotators import add

    raise typer.Exit(add(_config(config, ctx), name, role))  # type: ignore[arg-type]  # the registry checks it


@annotators_app.command("list", context_settings=WITH_OVERRIDES)
def annotators_list(ctx: typer.Context, config: Path = CONFIG_OPTION) -> None:
    """List the annotators (never their tokens)."""
    from jobs.annotators import show

    raise typer.Exit(show(_config(config, ctx)))


@annotators_app.command("revoke", context_settings=WITH_OVERRIDES)
def annotators_revoke(ctx: typer.Context, name: str = typer.Argument(...), config: Path = CONFIG_OPTION) -> None:
    """Revoke an annotator's token (their answers stay)."""
    from jobs.annotators import revoke

    raise typer.Exit(revoke(_config(config, ctx), name))


@app.command("config", context_settings=WITH_OVERRIDES)
def show_config(
    ctx: typer.Context,
    config: Path = CONFIG_OPTION,
    schema: bool = typer.Option(False, "--schema", help="Print the JSON Schema of the whole config instead."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the reference page (docs/config.md) instead."),
) -> None:
    """Print the validated config (file + overrides, defaults filled in) as YAML, its JSON Schema, or its reference."""
    if schema:
        text = json.dumps(Config.model_json_schema(), indent=2, ensure_ascii=False) + "\n"
    else:
        text = config_markdown() if markdown else dump_config(_config(config, ctx))
    typer.echo(text, nl=False)


def error_line(exc: ActiveAlignError) -> str:
    """The one line a failed command prints. An error raised inside a Ray actor (say the selector, once a feature
    worker's restarts are used up) reaches the driver wrapped with the actor's traceback; the line names the
    original error's message only."""
    return f"error: {getattr(exc, 'cause', None) or exc}"


def main() -> None:
    """Console-script entry: map activealign errors to one line on stderr and an exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Outside standalone mode typer returns a command's exit code (typer.Exit, and 130 for a
        # KeyboardInterrupt it caught) instead of exiting: pass it on.
        code = app(standalone_mode=False)
    except ActiveAlignError as exc:
        print(error_line(exc), file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # click's usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is None:
            raise
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        sys.exit(code)
    if code == 130:
        print("interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
