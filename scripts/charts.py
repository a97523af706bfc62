#!/usr/bin/env python3
"""Summarises and draws the reports of scripts/bench-scale.sh.

    scripts/charts.py OUTDIR [--docs DIR] [--no-charts] [--elapsed SECS] [--command CMD]

Reads OUTDIR's crosswire-bench JSON reports (`a.<broker>.<nodes>.json`, `b.none.<receivers>.json`,
`c.<broker>.<rate>.json` with `.verdict`, `d.none.<connections>.json`), the broker CPU beside
each (`.broker.json`) and `machine.json`; writes OUTDIR/summary.md (markdown tables),
OUTDIR/section.md (the section for docs/BENCHMARKS.md, images linked relative to docs/),
OUTDIR/scale.json (the rows), and, unless --no-charts, the charts as SVG into DIR (default
docs/: scale-nodes.svg, scale-receivers.svg, scale-throughput.svg) with PNG copies in OUTDIR.
The summary needs only the standard library; the charts need matplotlib.
"""

import argparse
import glob
import json
import os
import sys

BROKERS = ["none", "redis", "redis-cluster", "nats"]
LABEL = {"none": "no broker", "redis": "Redis", "redis-cluster": "Redis Cluster (3+3)", "nats": "NATS"}
COLOR = {"none": "#555555", "redis": "#d62728", "redis-cluster": "#ff7f0e", "nats": "#1f77b4"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def row_of(path):
    """The figures of one report (with its broker CPU beside it), or None."""
    r = load(path)
    if r is None:
        return None
    base = path[: -len(".json")]
    part, broker, key = os.path.basename(base).split(".", 2)
    side = load(base + ".broker.json") or {}
    server, client, machine = r.get("server") or {}, r.get("client") or {}, r.get("machine") or {}
    res, lat = r.get("results") or {}, r.get("latency") or {}
    window = server.get("window_secs") or 0.0
    broker_ms = side.get("cpu_ticks", 0) * 1000.0 / side.get("ticks_per_sec", 100)
    broker_pct = broker_ms / 10.0 / window if window else 0.0
    sent = res.get("sent") or 0
    row = dict(
        part=part, broker=broker, key=int(key), scenario=r.get("scenario"),
        nodes=len((r.get("params") or {}).get("nodes") or []) or side.get("nodes", 1),
        params=r.get("params") or {},
        sent=sent, send_secs=res.get("send_secs"), expected=res.get("expected"),
        delivered=res.get("delivered"), lost=res.get("lost"), duplicates=res.get("duplicates"),
        disconnected=res.get("disconnected"), out_of_order=res.get("out_of_order"),
        deliveries_per_sec=res.get("deliveries_per_sec"), skipped_ticks=res.get("skipped_ticks"),
        p50_ms=lat.get("p50_us", 0) / 1000 if lat else None,
        p99_ms=lat.get("p99_us", 0) / 1000 if lat else None,
        max_ms=lat.get("max_us", 0) / 1000 if lat else None,
        node_cpu_us=server.get("cpu_us_per_op"), node_cpu_pct=server.get("cpu_pct"),
        node_rss_kb=server.get("rss_after_kb"), node_rss_before_kb=server.get("rss_before_kb"),
        gen_cpu_pct=client.get("cpu_pct"), gen_rss_kb=client.get("rss_after_kb"),
        busy_pct=machine.get("busy_pct"), other_pct=machine.get("other_pct"),
        broker_cpu_ms=broker_ms, broker_cpu_pct=broker_pct,
        broker_us_per_msg=broker_ms * 1000 / sent if sent and broker != "none" else None,
        window_secs=window,
    )
    # The bench counts the brokers' CPU as "other programs": take it out again.
    if row["other_pct"] is not None:
        row["other_excl_pct"] = max(0.0, row["other_pct"] - broker_pct)
    if sent and res.get("send_secs"):
        row["sent_rate"] = sent / res["send_secs"]
    if part == "c":
        try:
            row["verdict"] = open(base + ".verdict").read().strip()
        except OSError:
            row["verdict"] = "no verdict"
    if part == "d":
        row.update(
            connected=res.get("connected"), failed=res.get("failed"), dropped=res.get("dropped"),
            connects_per_sec=res.get("connects_per_sec"), connect_secs=res.get("connect_secs"),
            server_bytes_per_conn=res.get("server_bytes_per_connection"),
            client_bytes_per_conn=res.get("client_bytes_per_connection"),
            sources=(r.get("params") or {}).get("source_addrs") or [],
            errors=res.get("errors") or [],
        )
    return row


def fmt(v, spec, dash="–"):
    return dash if v is None else format(v, spec)


def group(v):
    return "–" if v is None else f"{round(v):,}"


def sent_cell(r):
    """Messages sent of those planned (rate × duration): the publisher skips the ticks it
    is late for, so a busy machine sends fewer."""
    p = r["params"]
    planned = round((p.get("rate") or 0) * (p.get("duration_secs") or 0))
    if not planned:
        return group(r["sent"])
    return f"{r['sent']:,} of {planned:,} ({100 * r['sent'] / planned:.0f}%)"


def machine_line(m):
    if not m:
        return "machine: unknown"
    return (f"{m['cores']} vCPU ({m['arch']}, {m['cpu']}), {m['mem_gib']} GiB, {m['os']}, Linux "
            f"{m['kernel']}; Redis {m['redis']}, NATS {m['nats']}; {m['pinning']}; {m['date']}")


def short_machine(m):
    if not m:
        return ""
    return (f"{m['cores']} vCPU {m['arch']} ({m['cpu']}), Linux {m['kernel'].split('-')[0]}, "
            f"Redis {m['redis']}, NATS {m['nats']}; {m['pinning']}; {m['date']}")


def summarise(rows, m, elapsed, command):
    a = sorted((r for r in rows if r["part"] == "a"), key=lambda r: (BROKERS.index(r["broker"]), r["key"]))
    b = sorted((r for r in rows if r["part"] == "b"), key=lambda r: r["key"])
    c = sorted((r for r in rows if r["part"] == "c"), key=lambda r: (BROKERS.index(r["broker"]), r["key"]))
    d = sorted((r for r in rows if r["part"] == "d"), key=lambda r: -len(r.get("sources") or []))
    out = []
    notes = []
    cores = (m or {}).get("cores", 2)
    others = [r["other_excl_pct"] for r in rows if r.get("other_excl_pct") is not None]
    if others:
        busy = (f"other programs used {min(others):.0f}–{max(others):.0f}% of a core "
                f"(median {sorted(others)[len(others) // 2]:.0f}%) during the measured windows "
                f"(brokers not counted as other)")
    else:
        busy = "machine load unknown"

    if a:
        p = a[0]["params"]
        out.append(f"### (a) Nodes and brokers: {p.get('receivers', '?'):,} receivers × "
                   f"{p.get('rate', '?'):g} msg/s × {p.get('size', '?')} B for "
                   f"{p.get('duration_secs', 0):.0f} s\n")
        out.append("Receivers spread round-robin over the nodes, publisher on node 1; node CPU is all "
                   f"nodes together. All nodes share one core ({cores} cores: the load generator has "
                   "the other), so 2 and 4 nodes measure the cost of the broker hops, not more capacity.\n")
        out.append("| broker | nodes | sent of planned | delivered (lost / dup) | p50 / p99 / max | node CPU per delivery | "
                   "node CPU | broker CPU per message | generator CPU | other load |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in a:
            out.append(
                f"| {LABEL[r['broker']]} | {r['key']} | {sent_cell(r)} "
                f"| {group(r['delivered'])} ({r['lost']} / {r['duplicates']}) "
                f"| {fmt(r['p50_ms'], '.2f')} / **{fmt(r['p99_ms'], '.2f')}** / {fmt(r['max_ms'], '.1f')} ms "
                f"| **{fmt(r['node_cpu_us'], '.2f')} µs** | {fmt(r['node_cpu_pct'], '.0f')}% "
                f"| {fmt(r['broker_us_per_msg'], '.0f')} µs | {fmt(r['gen_cpu_pct'], '.0f')}% "
                f"| {fmt(r.get('other_excl_pct'), '.0f')}% |")
        out.append("")
        by = {(r["broker"], r["key"]): r for r in a}
        for n in (2, 4):
            rc, rd = by.get(("redis-cluster", n)), by.get(("redis", n))
            if rc and rd and rc["p99_ms"] and rd["p99_ms"] and rc["p99_ms"] > 3 * rd["p99_ms"]:
                notes.append(f"(a) Redis Cluster with {n} nodes: p50 / p99 {rc['p50_ms']:.2f} / "
                             f"{rc['p99_ms']:.1f} ms against Redis's {rd['p50_ms']:.2f} / {rd['p99_ms']:.1f} ms "
                             "— the deliveries to the other nodes arrive late (crosswire subscribes on a "
                             "replica of the shard).")
        lossy = [r for r in a if r["lost"] or r["duplicates"] or r["disconnected"]]
        for r in lossy:
            notes.append(f"(a) {LABEL[r['broker']]} with {r['key']} nodes: lost {r['lost']}, "
                         f"duplicates {r['duplicates']}, disconnected {r['disconnected']}.")

    if b:
        p = b[0]["params"]
        out.append(f"### (b) Receivers on one node: {p.get('rate', '?'):g} msg/s × {p.get('size', '?')} B "
                   f"for {p.get('duration_secs', 0):.0f} s, no broker\n")
        out.append(f"The rate is low enough that 10,000 receivers ({p.get('rate', 0) * 10000:,.0f} "
                   f"deliveries/s) fit the {cores} cores; node RSS is measured at the end, with every "
                   "receiver connected.\n")
        out.append("| receivers | sent of planned | deliveries/s | lost / dup | p50 / p99 / max | node CPU per delivery "
                   "| node CPU | node RSS | generator CPU | other load |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in b:
            out.append(
                f"| {r['key']:,} | {sent_cell(r)} | {group(r['deliveries_per_sec'])} | {r['lost']} / {r['duplicates']} "
                f"| {fmt(r['p50_ms'], '.2f')} / **{fmt(r['p99_ms'], '.2f')}** / {fmt(r['max_ms'], '.1f')} ms "
                f"| **{fmt(r['node_cpu_us'], '.2f')} µs** | {fmt(r['node_cpu_pct'], '.0f')}% "
                f"| {fmt((r['node_rss_kb'] or 0) / 1024, '.1f')} MiB | {fmt(r['gen_cpu_pct'], '.0f')}% "
                f"| {fmt(r.get('other_excl_pct'), '.0f')}% |")
        out.append("")
        for r in b:
            if r["lost"] or r["duplicates"] or r["disconnected"]:
                notes.append(f"(b) {r['key']} receivers: lost {r['lost']}, duplicates {r['duplicates']}, "
                             f"disconnected {r['disconnected']}.")

    best = {}
    if c:
        p = c[0]["params"]
        limit = None
        out.append(f"### (c) Broker throughput: 2 nodes, {p.get('receivers', '?')} receivers "
                   f"(half on each), {p.get('size', '?')} B messages, "
                   f"{p.get('duration_secs', 0):.0f} s per step\n")
        out.append("The publish rate doubles until p99 passes the limit or a message is lost, then one step "
                   "halfway back. Node CPU is both nodes (percent of one core); they and the broker "
                   "share one core.\n")
        out.append("| broker | rate | sent/s | lost / dup | p50 / p99 | node CPU | broker CPU | generator CPU "
                   "| other load | verdict |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in c:
            out.append(
                f"| {LABEL[r['broker']]} | {r['key']:,} | {group(r.get('sent_rate'))} | {r['lost']} / {r['duplicates']} "
                f"| {fmt(r['p50_ms'], '.2f')} / {fmt(r['p99_ms'], '.1f')} ms | {fmt(r['node_cpu_pct'], '.0f')}% "
                f"| {fmt(r['broker_cpu_pct'], '.0f')}% | {fmt(r['gen_cpu_pct'], '.0f')}% "
                f"| {fmt(r.get('other_excl_pct'), '.0f')}% | {r['verdict']} |")
        out.append("")
        out.append("| broker | highest rate within p99 ≤ limit, no loss | next step |")
        out.append("|---|---|---|")
        for broker in BROKERS:
            rs = [r for r in c if r["broker"] == broker]
            if not rs:
                continue
            passed = [r for r in rs if r["verdict"] == "pass"]
            failed = sorted((r for r in rs if r["verdict"] != "pass"), key=lambda r: r["key"])
            top = max(passed, key=lambda r: r["key"]) if passed else None
            nxt = min((f for f in failed if not top or f["key"] > top["key"]), key=lambda r: r["key"], default=None)
            best[broker] = dict(rate=top["key"] if top else 0, p99_ms=top["p99_ms"] if top else None,
                                next=nxt["key"] if nxt else None, why=nxt["verdict"] if nxt else None)
            where = (f"**{top['key']:,} msg/s** (p99 {top['p99_ms']:.1f} ms, node CPU "
                     f"{top['node_cpu_pct']:.0f}%, broker {top['broker_cpu_pct']:.0f}%)") if top else "none"
            why = f"{nxt['key']:,} msg/s: {nxt['verdict']}" if nxt else "no step failed (raise C_RATES)"
            out.append(f"| {LABEL[broker]} | {where} | {why} |")
            above = f"; the limit is above {top['key']:,} msg/s" if top else ""
            if nxt and nxt["verdict"].startswith("generator"):
                notes.append(f"(c) {LABEL[broker]}: the load generator could not send {nxt['key']:,} msg/s "
                             f"({nxt['verdict']}){above}.")
            if nxt and nxt["verdict"].startswith("short"):
                notes.append(f"(c) {LABEL[broker]}: at {nxt['key']:,} msg/s the publisher fell behind in all "
                             f"three tries with its core not saturated — delayed by other programs "
                             f"({nxt['verdict']}){above}.")
            for r in rs:
                if (r["gen_cpu_pct"] or 0) >= 90:
                    notes.append(f"(c) {LABEL[broker]} at {r['key']:,} msg/s: the load generator used "
                                 f"{r['gen_cpu_pct']:.0f}% of its core (saturated).")
            for r in rs:
                if r["lost"] or r["disconnected"]:
                    notes.append(f"(c) {LABEL[broker]} at {r['key']:,} msg/s: lost {r['lost']} of "
                                 f"{r['expected']:,} deliveries, {r['disconnected']} receivers disconnected.")
        out.append("")

    if d:
        out.append("### (d) Idle connections from several source addresses, one node\n")
        out.append("| connections | connected / failed / dropped | source addresses | connect time | "
                   "connects/s | server RSS per connection | server RSS | generator per connection | other load |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in d:
            srcs = r["sources"]
            src = f"{len(srcs)} ({srcs[0]} … {srcs[-1]})" if srcs else "1 (127.0.0.1, the system's choice)"
            out.append(
                f"| {r['key']:,} | {group(r['connected'])} / {r['failed']} / {r['dropped']} | {src} "
                f"| {fmt(r['connect_secs'], '.2f')} s | {group(r['connects_per_sec'])} "
                f"| **{fmt((r['server_bytes_per_conn'] or 0) / 1024, '.2f')} KiB** "
                f"| {fmt((r['node_rss_kb'] or 0) / 1024, '.1f')} MiB "
                f"| {fmt((r['client_bytes_per_conn'] or 0) / 1024, '.1f')} KiB | {fmt(r.get('other_excl_pct'), '.0f')}% |")
            if r["failed"] or r["dropped"]:
                notes.append(f"(d) {r['failed']} connections failed, {r['dropped']} dropped; first errors: "
                             + "; ".join(r["errors"][:2]))
        out.append("")
        out.append(f"The file-descriptor hard limit is {(m or {}).get('nofile_hard', '?'):,} per process; "
                   "each client socket is bound to the source addresses in turn (`--source-addrs`).\n")

    short = [r for r in rows if r["part"] in "ab" and r["sent"] and r["params"].get("rate")
             and r["sent"] < 0.95 * r["params"]["rate"] * r["params"].get("duration_secs", 0)]
    if short:
        notes.append(f"{len(short)} fan-out runs of (a) and (b) sent under 95% of their planned messages "
                     "(the publisher skips the ticks it is late for): their delivery counts are lower, "
                     "the CPU per delivery is still per delivery made.")
    # Busy / disturbed runs.
    disturbed = [r for r in rows if (r.get("other_excl_pct") or 0) >= 20]
    if disturbed:
        notes.append(f"{len(disturbed)} of {len(rows)} runs had other programs above 20% of a core "
                     "(marked in the \"other load\" column): their latencies and CPU figures are disturbed.")

    head = [
        f"**Machine:** {machine_line(m)}.",
        "",
        f"Run: `{command}` — {elapsed // 60} min {elapsed % 60} s; {busy}.",
        "",
    ]
    tail = ["Notes:", ""] + [f"- {n}" for n in notes] + [""] if notes else []
    return head, out, tail, best


def charts(rows, m, docs, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def plain(v, _pos=None):
        if v >= 1000:
            return f"{v / 1000:g}k"
        return f"{v:g}"

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "crosswire", "font.size": 9,
                         "axes.grid": True, "grid.alpha": 0.3})
    caption = short_machine(m)
    written = []

    def save(fig, name):
        fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7, color="#444444")
        fig.tight_layout(rect=(0, 0.04, 1, 0.95))
        svg = os.path.join(docs, name + ".svg")
        fig.savefig(svg, metadata={"Date": None})
        fig.savefig(os.path.join(out_dir, name + ".png"), dpi=110)
        plt.close(fig)
        written.append(svg)

    a = [r for r in rows if r["part"] == "a"]
    if a:
        p = a[0]["params"]
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 4))
        fig.suptitle(f"Fan-out on 1, 2 and 4 nodes: {p.get('receivers', 0):,} receivers × "
                     f"{p.get('rate', 0):g} msg/s × {p.get('size', 0)} B (all nodes on one core)", fontsize=10)
        for broker in BROKERS:
            rs = sorted((r for r in a if r["broker"] == broker), key=lambda r: r["key"])
            if not rs:
                continue
            if broker == "none":
                # One node without a broker: the baseline, drawn across.
                base = rs[0]
                for ax, v in ((axes[0], base["node_cpu_us"]), (axes[1], base["p99_ms"])):
                    if v is not None:
                        ax.axhline(v, color=COLOR[broker], linestyle="--", linewidth=1,
                                   label=f"{LABEL[broker]}, 1 node")
                        ax.plot([1], [v], marker="s", color=COLOR[broker])
                continue
            xs = [r["key"] for r in rs]
            style = dict(color=COLOR[broker], label=LABEL[broker], marker="o")
            axes[0].plot(xs, [r["node_cpu_us"] for r in rs], **style)
            axes[1].plot(xs, [r["p99_ms"] for r in rs], **style)
        axes[0].set_title("node CPU per delivery (all nodes together)")
        axes[0].set_ylabel("CPU per delivery (µs)")
        axes[1].set_title("p99 latency, publish to receipt")
        axes[1].set_ylabel("p99 latency (ms, log scale)")
        axes[1].set_yscale("log")
        axes[1].yaxis.set_major_formatter(FuncFormatter(plain))
        axes[1].yaxis.set_minor_formatter(NullFormatter())
        axes[0].set_ylim(bottom=0)
        for ax in axes:
            ax.set_xlabel("nodes")
            ax.set_xticks([1, 2, 4])
            ax.legend(fontsize=8)
        save(fig, "scale-nodes")

    b = sorted((r for r in rows if r["part"] == "b"), key=lambda r: r["key"])
    if b:
        p = b[0]["params"]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
        fig.suptitle(f"Receivers on one node (no broker): {p.get('rate', 0):g} msg/s × {p.get('size', 0)} B "
                     f"to 100 … 10,000 receivers", fontsize=10)
        xs = [r["key"] for r in b]
        axes[0].plot(xs, [r["node_cpu_us"] for r in b], marker="o", color="#2ca02c", label="node CPU per delivery")
        axes[0].set_ylabel("CPU per delivery (µs)")
        axes[0].set_title("node CPU per delivery")
        axes[1].plot(xs, [r["p99_ms"] for r in b], marker="o", color="#9467bd", label="p99")
        axes[1].plot(xs, [r["p50_ms"] for r in b], marker=".", linestyle="--", color="#9467bd", alpha=0.6, label="p50")
        axes[1].set_ylabel("latency (ms, log scale)")
        axes[1].set_title("latency, publish to receipt")
        axes[1].set_yscale("log")
        axes[1].yaxis.set_major_formatter(FuncFormatter(plain))
        axes[1].yaxis.set_minor_formatter(NullFormatter())
        axes[2].plot(xs, [(r["node_rss_kb"] or 0) / 1024 for r in b], marker="o", color="#8c564b", label="node RSS")
        axes[2].set_ylabel("RSS (MiB)")
        axes[2].set_title("node memory with all receivers connected")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("receivers (log scale)")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:,}" for x in xs], fontsize=7)
            ax.minorticks_off()
            if ax is not axes[1]:
                ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        save(fig, "scale-receivers")

    c = [r for r in rows if r["part"] == "c"]
    if c:
        p = c[0]["params"]
        limit = float(os.environ.get("C_P99_MS", 50))
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 4))
        fig.suptitle(f"Broker throughput: 2 nodes, {p.get('receivers', 0)} receivers, {p.get('size', 0)} B "
                     f"messages, publish rate raised until p99 > {limit:g} ms or loss", fontsize=10)
        for broker in BROKERS:
            rs = sorted((r for r in c if r["broker"] == broker), key=lambda r: r["key"])
            if not rs:
                continue
            xs = [r["key"] for r in rs]
            axes[0].plot(xs, [r["p99_ms"] for r in rs], marker="o", color=COLOR[broker], label=LABEL[broker])
            bad = [r for r in rs if r["lost"] or r["disconnected"]]
            if bad:
                axes[0].scatter([r["key"] for r in bad], [r["p99_ms"] for r in bad], marker="x", s=60,
                                color=COLOR[broker], zorder=5)
            axes[1].plot(xs, [r["node_cpu_pct"] for r in rs], marker="o", color=COLOR[broker],
                         label=f"{LABEL[broker]}: nodes")
            axes[1].plot(xs, [r["broker_cpu_pct"] for r in rs], marker=".", linestyle="--",
                         color=COLOR[broker], label=f"{LABEL[broker]}: broker")
        axes[0].axhline(limit, color="black", linewidth=0.8, linestyle=":", label=f"limit {limit:g} ms")
        axes[0].set_yscale("log")
        axes[0].yaxis.set_major_formatter(FuncFormatter(plain))
        axes[0].yaxis.set_minor_formatter(NullFormatter())
        rates = sorted({r["key"] for r in c})
        axes[0].set_ylabel("p99 latency (ms, log scale)")
        axes[0].set_title("p99 latency (× = messages lost)")
        axes[1].set_ylabel("CPU (% of one core)")
        axes[1].set_title("CPU of both nodes and of the broker")
        axes[1].set_ylim(bottom=0)
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("publish rate (messages/s, log scale)")
            ax.set_xticks(rates)
            ax.xaxis.set_major_formatter(FuncFormatter(plain))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", labelsize=7)
            ax.legend(fontsize=7)
        save(fig, "scale-throughput")
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--docs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs"))
    ap.add_argument("--no-charts", action="store_true")
    ap.add_argument("--elapsed", type=int, default=0, help="run time of the measurements in seconds")
    ap.add_argument("--command", default="scripts/bench-scale.sh")
    args = ap.parse_args()
    m = load(os.path.join(args.out, "machine.json"))
    rows = []
    for path in sorted(glob.glob(os.path.join(args.out, "[abcd].*.json"))):
        if path.endswith(".broker.json"):
            continue
        r = row_of(path)
        if r:
            rows.append(r)
    if not rows:
        sys.exit(f"no reports in {args.out}")
    head, body, tail, best = summarise(rows, m, args.elapsed, args.command)
    with open(os.path.join(args.out, "scale.json"), "w") as f:
        json.dump({"machine": m, "rows": rows, "throughput": best}, f, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(["# crosswire scaling run", ""] + head + body + tail))
    written = []
    if not args.no_charts:
        written = charts(rows, m, os.path.abspath(args.docs), args.out)
    images = {"a": ("scale-nodes", "Fan-out on 1, 2 and 4 nodes over each broker"),
              "b": ("scale-receivers", "Receivers on one node"),
              "c": ("scale-throughput", "Broker throughput")}
    section = ["## How it scales: nodes, receivers, broker throughput, idle connections", "",
               "One run of `scripts/bench-scale.sh` starts everything on loopback itself (a redis-server, "
               "a Redis Cluster of 3 masters + 3 replicas, a nats-server, and `crosswire serve --threads 1` "
               "nodes), measures the four parts below and draws the charts "
               "(`scripts/charts.py`, matplotlib):", "",
               "```sh", "cargo build --release -p crosswire-cli -p crosswire-bench",
               "scripts/bench-scale.sh /tmp/scale     # reports, summary.md and section.md in /tmp/scale; "
               "charts in docs/scale-*.svg", "```", ""] + head
    parts = {"a": [], "b": [], "c": [], "d": []}
    current = None
    for line in body:
        if line.startswith("### ("):
            current = line[5]
        if current:
            parts[current].append(line)
    for key in "abcd":
        if not parts[key]:
            continue
        section += parts[key]
        if key in images and os.path.join(os.path.abspath(args.docs), images[key][0] + ".svg") in written:
            section += [f"![{images[key][1]}]({images[key][0]}.svg)", ""]
    section += tail
    with open(os.path.join(args.out, "section.md"), "w") as f:
        f.write("\n".join(section))
    print("\n".join(head + body + tail))
    for w in written:
        print(f"chart: {w}", file=sys.stderr)


if __name__ == "__main__":
    main()
