"""Screenshots of the annotator page and the agreement page, as docs/oracle.md shows them.

Starts `activealign serve` with the human oracle (k = 3, guidelines, a fresh SQLite store) on 127.0.0.1, adds three
annotators and a reviewer, queues four demo pairs (Markdown with a code block), lets the three answer three of them
over HTTP, then opens ``/annotate`` as the reviewer (the fourth pair, with the help panel open) and
``/annotate/stats`` in headless Chromium and writes ``annotate.png`` and ``stats.png`` to ``--out``.

    python benchmarks/annotation_screenshots.py --out docs/images
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
from pathlib import Path

import httpx
from oracle_server import free_port, serving

from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry
from system.labels.queue import swapped_for

TOKEN = "screenshots-token-0123456789"
GUIDELINES = """# Which answer is better?

Prefer the answer that is **correct**, then the one that is **clear**. Press `t` when both are equally good,
`b` when neither is acceptable.
"""
PAIRS = [
    ("How do I reverse a list in Python?",
     "Use slicing:\n\n```python\nitems[::-1]\n```\n\nIt returns a new list.",
     "Call `items.reverse()`; it reverses **in place** and returns `None`."),
    ("What is the boiling point of water at sea level?", "100 °C (212 °F).", "About 90 °C."),
    ("Name a prime number between 10 and 20.", "15", "13"),
    ("Summarise: *The cat sat on the mat.*", "A cat sat on a mat.", "Cats are mammals."),
]
VOTES = {"ann": (1, 1, 2), "bob": (1, 1, 2), "cy": (1, 2, 2)}  # by pair: the response each prefers


def answer_demo_pairs(url: str, tokens: dict[str, str]) -> None:
    """Queue :data:`PAIRS` with the run token; each person in :data:`VOTES` answers three of them."""
    pairs = [{"pair_id": f"demo-{i}", "prompt": prompt, "response_1": one, "response_2": two}
             for i, (prompt, one, two) in enumerate(PAIRS)]
    httpx.post(f"{url}/v1/label", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
               json={"pairs": pairs, "round": 1}).raise_for_status()
    rng = random.Random(0)
    for name, votes in VOTES.items():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=60) as client:
            for preferred in votes:
                task = client.get("/v1/tasks/next").json()["task"]
                shown = 3 - preferred if swapped_for(name, task["task_id"]) else preferred
                client.post(f"/v1/tasks/{task['task_id']}/answer",
                            json={"choice": shown, "answer_ms": rng.randint(4000, 20000)}).raise_for_status()


def capture(url: str, token: str, out: Path) -> None:
    """``annotate.png`` (the next pair, help open) and ``stats.png`` as the holder of ``token`` sees them."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 820})
        page.goto(f"{url}/annotate#token={token}")
        page.wait_for_selector("#task:not([hidden])")
        page.keyboard.press("?")
        page.screenshot(path=str(out / "annotate.png"), full_page=True)
        page.goto(f"{url}/annotate/stats#token={token}")
        page.wait_for_selector("body[data-loaded='1']")
        page.screenshot(path=str(out / "stats.png"), full_page=True)
        browser.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "guidelines.md").write_text(GUIDELINES)
        oracle = {"kind": "human", "port": free_port(), "label_store_url": f"sqlite:///{workdir}/labels.db",
                  "human": {"annotations_per_pair": 3, "guidelines_path": str(workdir / "guidelines.md")}}
        with serving(oracle, workdir, TOKEN) as url:
            with LabelStore(oracle["label_store_url"]) as store:
                registry = AnnotatorRegistry(store)
                tokens = {name: registry.add(name, role)[1] for name, role in
                          (("ann", "annotator"), ("bob", "annotator"), ("cy", "annotator"), ("rita", "reviewer"))}
            answer_demo_pairs(url, tokens)
            capture(url, tokens["rita"], args.out)
    print(f"wrote {args.out / 'annotate.png'} and {args.out / 'stats.png'}")


if __name__ == "__main__":
    main()
