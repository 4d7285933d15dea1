#!/usr/bin/env python3
"""Before/after in one run: the same benches against several builds, interleaved.

    crates/m2m-bench/compare.py [--rounds 3] [--only hub,p2p] LABEL=DIR [LABEL=DIR ...]

DIR is a target directory holding release builds of m2m-bench and m2m (e.g. a worktree's
target/release). Every round runs each scenario once per build, builds in turn, so that
noise from the shared machine falls on all of them alike; then it prints, per figure, the
median of each build over the rounds and its ratio to the first build. The raw JSON of
every run goes to $OUT (default target/bench-compare). PG_URL (a role that may create
databases, `{unique}` in the name) adds the PostgreSQL hub scenario.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

SCENARIOS = {
    "hub": ["hub", "--agents", "10000", "--concurrency", "64"],
    "hub-pipe8": ["hub", "--agents", "10000", "--concurrency", "64", "--pipeline", "8"],
    "hub-groups": ["hub", "--agents", "10000", "--concurrency", "64",
                   "--capability-groups", "100", "--actions", "discover"],
    "hub-m2m": ["hub", "--hub-cmd", "m2m", "--agents", "10000", "--concurrency", "64"],
    "hub-postgres": ["hub", "--agents", "10000", "--concurrency", "64", "--database", "{pg}"],
    "p2p": ["p2p"],
    "p2p-threads1": ["--threads", "1", "p2p"],
    "hold-16667": ["hub", "--agents", "16667", "--actions", "none", "--hold", "35s"],
    "crypto": ["crypto", "--duration", "1s"],
    # Opt-in (--only relay): builds from before the relay have no `relay` bench.
    "relay": ["relay"],
}
OPT_IN = {"hub-postgres", "relay"}


def figures(doc):
    """The numeric figures of one bench document (its runs, or the document itself)."""
    out = {}
    runs = doc.get("runs") if isinstance(doc, dict) else None
    for run in runs or [doc]:
        # Most benches put their figures in "figures"; crypto's are the document's fields.
        for name, v in (run.get("figures") or run).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(name, []).append(float(v))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(k for k in SCENARIOS if k not in OPT_IN))
    ap.add_argument("builds", nargs="+")
    args = ap.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    out_dir = os.environ.get("OUT", "target/bench-compare")
    os.makedirs(out_dir, exist_ok=True)
    pg = os.environ.get("PG_URL")
    names = [s for s in args.only.split(",") if s]
    if pg and "hub-postgres" not in names:
        names.append("hub-postgres")
    results = {}  # scenario -> figure -> label -> [values]
    for r in range(1, args.rounds + 1):
        for scenario in names:
            if scenario == "hub-postgres" and not pg:
                continue
            for label, bin_dir in builds:
                argv = [a.replace("{pg}", pg or "") for a in SCENARIOS[scenario]]
                cmd = [os.path.join(bin_dir, "m2m-bench")] + argv
                print(f"== round {r} {scenario} {label}: {' '.join(cmd)}", file=sys.stderr)
                env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"])
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                with open(f"{out_dir}/{scenario}.{label}.{r}.json", "w") as f:
                    f.write(done.stdout)
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    sys.exit(f"{scenario} {label} failed (exit {done.returncode})")
                for name, values in figures(json.loads(done.stdout)).items():
                    per = results.setdefault(scenario, {}).setdefault(name, {})
                    per.setdefault(label, []).extend(values)
    labels = [label for label, _ in builds]
    print("| scenario | figure | " + " | ".join(labels) + " | "
          + " | ".join(f"{l} ÷ {labels[0]}" for l in labels[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(labels) - 1))
    for scenario, figs in results.items():
        for name, per in sorted(figs.items()):
            meds = [statistics.median(per[l]) if per.get(l) else None for l in labels]
            base = meds[0]
            cells = [f"{m:,.1f}" if m is not None else "—" for m in meds]
            ratios = [f"{m / base:.3f}" if base and m is not None else "—" for m in meds[1:]]
            print(f"| {scenario} | {name} | " + " | ".join(cells) + " | "
                  + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
