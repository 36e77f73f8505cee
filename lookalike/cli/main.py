"""The `lookalike` command line: a thin face over the engine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lookalike.config import Settings
from lookalike.encoders import DEFAULT_MODEL
from lookalike.encoders.views import DEFAULT_QUERY_MODE, QUERY_MODES
from lookalike.engine import Engine, ErrorKind, IndexReport, LookalikeError, PriceEstimate, SearchResult, prepare_model
from lookalike.engine.suggest import Suggestions
from lookalike.images import ImageDecodeError
from lookalike.index import BACKENDS
from lookalike.store import ItemFilter
from lookalike.text import one_line

#: Exit codes by error kind: 2 for anything wrong with what was asked, 3 when a store or
#: server is unavailable (worth retrying); 1 is kept for "some queries failed".
EXIT_CODES = {ErrorKind.UNAVAILABLE: 3}
USAGE_ERROR = 2


class CliError(LookalikeError):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description="Reverse image search for catalogues of sold items.")
    parser.add_argument("--catalog", default=None,
                        help="catalogue folder (env LOOKALIKE_CATALOG, default ./catalog)")
    parser.add_argument("--model", default=None, help=f"encoder, e.g. {DEFAULT_MODEL} or efficientnet-lite2:avg "
                        f"(default: the catalogue's model, else {DEFAULT_MODEL})")
    parser.add_argument("--index", default="auto", choices=["auto", *BACKENDS], help="index backend (default: by size)")
    parser.add_argument("--index-option", action="append", default=[], metavar="NAME=VALUE",
                        help="tune the index, e.g. m=32, ef_search=128, ef_construction=400 (hnsw); "
                             "n_trees=100, search_k=20000 (annoy); dtype=float16 (exact)")
    parser.add_argument("--store", default=None, metavar="URL",
                        help="the catalogue's store: a PostgreSQL database (postgresql://user:password@host/db) that "
                             "several servers share (env LOOKALIKE_STORE; default: SQLite in the catalogue folder)")
    parser.add_argument("--milvus-uri", default=None,
                        help="with --index milvus: a Milvus server (http://host:19530, env LOOKALIKE_MILVUS_URI; token in "
                             "LOOKALIKE_MILVUS_TOKEN) "
                             "or a Milvus Lite file (default: milvus.db in the catalogue folder)")
    parser.add_argument("--query-mode", default=DEFAULT_QUERY_MODE, choices=list(QUERY_MODES),
                        help="search with the whole photo only (single, fastest), with it and 18 crops (crops-light) "
                             "or with it and 32 crops (crops, default, most accurate)")
    parser.add_argument("--verify-top", type=int, default=None, metavar="N",
                        help="check the N best lots with local features: inliers, same-object verdict, re-ranking "
                             "(default 10; 0 switches it off; env LOOKALIKE_VERIFY_TOP)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser("index", help="add photos (folders are walked) and/or a metadata file to the catalogue")
    index.add_argument("sources", nargs="*", help="image files or folders")
    index.add_argument("--metadata", help="CSV or JSONL with columns id,image,title,category,price,currency,sold_at,...; "
                       "image may list a lot's photos separated by | (JSONL: \"images\": [...])")
    index.add_argument("--lot-per-folder", action="store_true",
                       help="each folder of photos is one lot (id: the folder's path), its photos the lot's photos")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="embed in parallel Ray Data actors: on this machine, or on a cluster (auto, ray://host:10001)")

    def add_filters(command: argparse.ArgumentParser) -> None:
        command.add_argument("--category", help="only items of this category")
        command.add_argument("--min-price", type=float, help="only items sold for at least this")
        command.add_argument("--max-price", type=float, help="only items sold for at most this")
        command.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                             help="only items whose extra field equals VALUE (repeatable)")

    search = commands.add_parser("search", help="find the catalogue items most similar to photos or to an item")
    search.add_argument("images", nargs="*", help="query photos (each its own query, unless --together)")
    search.add_argument("--together", action="store_true",
                        help="the photos show one new item: one query, lots matching all of them first")
    search.add_argument("--id", dest="item_id", help="search by an item already in the catalogue (more like this)")
    search.add_argument("--text", help='search by a description, e.g. "red armchair" (needs a CLIP model, --model hf:...)')
    search.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="one JSON object per query")
    add_filters(search)

    estimate = commands.add_parser("estimate", help="estimate what the item in a photo will fetch, with a calibrated range")
    estimate.add_argument("image", nargs="*", help="photos of the item (all of one item)")
    estimate.add_argument("--id", dest="item_id", help="estimate for an item already in the catalogue (itself left out)")
    estimate.add_argument("-k", type=int, default=10, help="number of similar sold items to use (default 10)")
    estimate.add_argument("--json", action="store_true")
    add_filters(estimate)

    suggest = commands.add_parser("suggest", help="suggest the category and fields of a new item from similar lots")
    suggest.add_argument("images", nargs="*", help="photos (each its own item, unless --together)")
    suggest.add_argument("--together", action="store_true", help="the photos show one new item")
    suggest.add_argument("--id", dest="item_id", help="suggest for a lot already in the catalogue (itself left out)")
    suggest.add_argument("--json", action="store_true", help="one JSON object per item")

    calibrate = commands.add_parser("calibrate", help="refit when to suggest fields, price ranges and declining "
                                    "on this catalogue (done on first use; again when it has changed by a tenth)")
    calibrate.add_argument("--json", action="store_true")
    calibrate.add_argument("--quiet", action="store_true", help="no progress bar")

    remove = commands.add_parser("remove", help="remove items by id")
    remove.add_argument("ids", nargs="+")

    commands.add_parser("info", help="what the catalogue holds").add_argument("--json", action="store_true")
    commands.add_parser("check", help="verify the catalogue: database integrity, vectors, index")
    migrate_store = commands.add_parser("migrate-store", help="copy the catalogue, vectors included, into another store")
    migrate_store.add_argument("target", metavar="URL", help="an empty PostgreSQL database (postgresql://...), or "
                               "'sqlite' for the catalogue folder's SQLite file")
    bench_index = commands.add_parser("bench-index", help="recall and latency of the current index against exact search")
    bench_index.add_argument("--queries", type=int, default=200)
    bench_index.add_argument("-k", type=int, default=10)
    bench_index.add_argument("--json", action="store_true")
    reindex = commands.add_parser("reindex", help="re-embed every item with the current model (--model)")
    reindex.add_argument("--quiet", action="store_true")

    duplicates = commands.add_parser("duplicates", help="groups of lots that show the same object (relisted, imported twice)")
    duplicates.add_argument("--neighbours", type=int, default=5, help="nearest lots checked per lot (default 5)")
    duplicates.add_argument("--min-score", type=float, default=0.75,
                            help="similarity a pair needs before its photos are verified (default 0.75)")
    duplicates.add_argument("--json", action="store_true", help="one JSON object per group")
    duplicates.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate_price = commands.add_parser("evaluate-price", help="leave-one-out price error, range coverage and "
                                         "declines against the median prices; a time-split backtest with sale dates")
    evaluate_price.add_argument("--limit", type=int, help="evaluate at most this many lots (default 2000)")
    evaluate_price.add_argument("--json", action="store_true")
    evaluate_price.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate_suggest = commands.add_parser("evaluate-suggest", help="leave-one-out accuracy of suggested fields "
                                           "against the majority value")
    evaluate_suggest.add_argument("--limit", type=int, help="evaluate at most this many lots (default 2000)")
    evaluate_suggest.add_argument("--json", action="store_true")
    evaluate_suggest.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="retrieval quality: recall@1/5/10, mAP@10, MRR over a queries CSV")
    evaluate.add_argument("queries", help="CSV with columns query_image,relevant_ids (ids separated by |; "
                          "paths relative to the CSV)")
    evaluate.add_argument("-k", type=int, default=10, help="ranks scored (default 10)")
    evaluate.add_argument("--misses", type=int, default=20, help="missed queries to list (default 20)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_filters(evaluate)

    commands.add_parser("prepare", help="build the model's ONNX graph into the cache now (for container images and "
                        "Ray workers; otherwise the first index or search does it)").add_argument("--json", action="store_true")
    demo = commands.add_parser("demo", help="build the demo catalogue from bundled real photos, search it, serve it")
    demo.add_argument("--queries", type=int, default=3, help="example searches to show (default 3)")
    demo.add_argument("--no-serve", action="store_true", help="stop after the example searches")
    add_server_options(demo)

    serve = commands.add_parser("serve", help="run the REST API (/docs) and the web page (/)")
    add_server_options(serve)
    return parser


def add_server_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    command.add_argument("--port", type=int, default=8000, help="port (default 8000)")


def _filter(args: argparse.Namespace) -> ItemFilter:
    fields = []
    for condition in args.where:
        name, separator, value = condition.partition("=")
        if not separator or not name:
            raise CliError(f"--where expects FIELD=VALUE, got {condition!r}")
        fields.append((name, value))
    return ItemFilter(category=args.category, min_price=args.min_price, max_price=args.max_price, fields=tuple(fields))


def _progress(quiet: bool, description: str, unit: str = "img"):
    """(on_total, on_progress, close) callbacks driving a tqdm bar (images/s unless ``unit`` says otherwise)."""
    if quiet:
        return None, None, lambda: None
    from tqdm import tqdm

    bar = {}

    def on_total(total: int) -> None:
        bar["bar"] = tqdm(total=total, unit=unit, desc=description, file=sys.stderr, dynamic_ncols=True)

    def on_progress(count: int) -> None:
        bar["bar"].update(count)

    return on_total, on_progress, lambda: bar.get("bar") and bar["bar"].close()


def _print_report(report: IndexReport, verb: str = "embedded") -> None:
    print(f"{verb} {report.embedded} images in {report.seconds:.1f} s ({report.images_per_second:.1f} img/s); "
          f"{report.unchanged} unchanged, {report.metadata_updated} with new metadata, {len(report.problems)} skipped")
    for problem in report.problems:
        print(f"  skipped {problem}")


def _money(value: float | None, currency: str | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} {currency or ''}".strip()


def _print_result(result: SearchResult) -> None:
    print(f"{result.query}  ({len(result.hits)} results, {result.took_ms:.0f} ms)")
    if not result.hits:
        print("  no matching items")
        return
    width = min(48, max(len(hit.id) for hit in result.hits))
    print(f"  {'#':>2}  {'score':>5}  {'inliers':>7}  {'id':<{width}}  {'title':<28}  {'category':<14}  {'price':>10}  photo")
    for rank, hit in enumerate(result.hits, 1):
        matched = f"{hit.matched_photo + 1} of {hit.photo_count}" if hit.photo_count > 1 else ""
        if hit.matched_query is not None:
            matched += f" (query photo {hit.matched_query + 1})"
        if hit.same_object:
            matched += "  SAME OBJECT"
        inliers = "" if hit.inliers is None else str(hit.inliers)
        print(f"  {rank:>2}  {hit.score:5.3f}  {inliers:>7}  {hit.id[:width]:<{width}}  {(hit.title or '')[:28]:<28}  "
              f"{(hit.category or '')[:14]:<14}  {_money(hit.price, hit.currency):>10}  {matched.strip()}".rstrip())


def _print_estimate(estimate: PriceEstimate) -> None:
    if estimate.price is None:
        print(f"no estimate: {estimate.declined}")
    else:
        print(f"estimated price {_money(estimate.price, estimate.currency)}, range {_money(estimate.low, estimate.currency)} "
              f"to {_money(estimate.high, estimate.currency)}, from {len(estimate.neighbours)} similar sold lots "
              f"(best match {estimate.best_score:.2f})\n  {estimate.meaning}")
    for neighbour in estimate.neighbours[:5]:
        adjusted = ("" if neighbour.adjusted_price is None or round(neighbour.adjusted_price) == round(neighbour.price)
                    else f" (today {_money(neighbour.adjusted_price, estimate.currency)})")
        print(f"  {neighbour.score:5.3f}  {_money(neighbour.price, estimate.currency):>10}{adjusted}  {neighbour.id}  "
              f"{neighbour.title or ''}".rstrip())


def _print_suggestions(query: str, suggestions: Suggestions) -> None:
    print(query)
    found = ([("category", suggestions.category)] if suggestions.category else []) + list(suggestions.fields.items())
    if suggestions.title:
        print(f"  {'title':<14} {suggestions.title}")
    for name, suggestion in found:
        print(f"  {name:<14} {suggestion.value}  ({suggestion.share:.0%} of the vote; {', '.join(suggestion.support[:3])})")
    for name, reason in suggestions.withheld.items():
        print(f"  {name:<14} -  ({reason})")
    if not found and not suggestions.withheld:
        print("  nothing to suggest: the catalogue has no category or fields to vote on")


def _cmd_index(engine: Engine, args: argparse.Namespace) -> int:
    if not args.sources and not args.metadata:
        raise CliError("give at least one image folder or file, or --metadata FILE")
    on_total, on_progress, close = _progress(args.quiet, "embedding")
    try:
        report = engine.index_sources(args.sources, args.metadata, on_total, on_progress, ray=args.ray,
                                      lot_per_folder=args.lot_per_folder)
    finally:
        close()
    _print_report(report)
    return 0


def _cmd_search(engine: Engine, args: argparse.Namespace) -> int:
    if sum(map(bool, (args.images, args.item_id, args.text))) != 1:
        raise CliError("give query images, --id ITEM or --text TEXT (one of them)")
    item_filter = _filter(args)
    failures = 0
    results = []
    if args.item_id:
        results.append(engine.search_by_id(args.item_id, args.k, item_filter))
    if args.text:
        results.append(engine.search_text(args.text, args.k, item_filter))
    for query in [args.images] if args.together else args.images:
        try:
            results.append(engine.search(query, args.k, item_filter))
        except ImageDecodeError as error:
            failures += 1
            print(one_line(f"lookalike: error: {query}: {error}"), file=sys.stderr)
    for result in results:
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            _print_result(result)
    return 1 if failures else 0


def _cmd_estimate(engine: Engine, args: argparse.Namespace) -> int:
    if bool(args.image) == bool(args.item_id):
        raise CliError("give the photos of one item, or --id ITEM")
    if args.item_id:
        estimate = engine.estimate_price_by_id(args.item_id, args.k)
    else:
        estimate = engine.estimate_price(args.image, args.k, _filter(args))
    if args.json:
        print(json.dumps(estimate.to_dict(), ensure_ascii=False))
    else:
        _print_estimate(estimate)
    return 0


def _cmd_remove(engine: Engine, args: argparse.Namespace) -> int:
    removed = engine.remove(args.ids)
    missing = [item_id for item_id in args.ids if item_id not in removed]
    print(f"removed {len(removed)} items")
    if missing:
        print(f"lookalike: error: no such items: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _cmd_info(engine: Engine, args: argparse.Namespace) -> int:
    info = engine.info()
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"catalogue  {info['catalog']}\nstore      {info['store']}\nitems      {info['items']}\nvectors    {info['vectors']}\n"
          f"model      {info['model_id']}\nindex      {info['index_backend']}\nschema     v{info['schema_version']}")
    for row in info["categories"][:20]:
        print(f"  {row['items']:>7}  {row['category']}")
    return 0


def _cmd_migrate_store(engine: Engine, args: argparse.Namespace) -> int:
    target = None if args.target == "sqlite" else args.target
    copied = engine.copy_store_to(target)
    use = "leave out --store and LOOKALIKE_STORE" if target is None else "use it with --store URL or LOOKALIKE_STORE"
    print(f"copied {copied['items']} lots, {copied['photos']} photos and {copied['photo_vectors']} vectors "
          f"to {copied['store']}; {use}")
    return 0


def _cmd_check(engine: Engine, args: argparse.Namespace) -> int:
    problems = engine.check()
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        return 1
    print(f"ok: {engine.count()} items, every one with a vector of {engine.model_id}, index in step")
    return 0


def _cmd_bench_index(engine: Engine, args: argparse.Namespace) -> int:
    report = engine.bench_index(args.queries, args.k)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{report['backend']} index, {report['items']} items, {report['queries']} queries of stored vectors, k={report['k']}")
    print(f"  recall@{report['k']} against exact  {report['recall']:.3f}")
    print(f"  latency  {report['backend']:>6}  p50 {report['p50_ms']:.2f} ms  p99 {report['p99_ms']:.2f} ms")
    if report["backend"] != "exact":
        print(f"  latency   exact  p50 {report['exact_p50_ms']:.2f} ms  p99 {report['exact_p99_ms']:.2f} ms")
    return 0


def _index_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        name, separator, raw = pair.partition("=")
        if not separator or not name:
            raise CliError(f"--index-option expects NAME=VALUE, got {pair!r}")
        for convert in (int, float, str):
            try:
                options[name] = convert(raw)
                break
            except ValueError:
                continue
    return options


def _cmd_reindex(engine: Engine, args: argparse.Namespace) -> int:
    on_total, on_progress, close = _progress(args.quiet, "re-embedding")
    try:
        report = engine.reindex(on_total, on_progress)
    finally:
        close()
    _print_report(report, "re-embedded")
    if report.problems:
        print("lookalike: error: some items could not be re-embedded; remove them or restore their photos, then rerun",
              file=sys.stderr)
        return 1
    return 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _with_progress(args: argparse.Namespace, description: str, run):
    """``run(on_total, on_progress)`` with a progress bar, unless --quiet or --json."""
    on_total, on_progress, close = _progress(args.quiet or args.json, description, "lot")
    try:
        return run(on_total, on_progress)
    finally:
        close()


def _cmd_evaluate_price(engine: Engine, args: argparse.Namespace) -> int:
    evaluation = _with_progress(args, "pricing lots from the others",
                                lambda total, progress: engine.evaluate_price(args.limit, total, progress))
    if args.json:
        print(json.dumps(evaluation.to_dict()))
        return 0
    print(f"price estimates, each lot priced from the others; ranges at {evaluation.level:.0%}")
    print(f"  {'setting':<40} {'time':>5} {'lots':>6} {'declined':>8} {'MdAPE':>6} {'bias':>5} {'±10%':>5} {'±20%':>5} "
          f"{'±50%':>5} {'inside':>6} {'width':>6} {'global':>7} {'category':>8}")
    for row in evaluation.rows:
        setting = row["setting"] if len(row["setting"]) <= 40 else row["setting"][:37] + "..."
        print(f"  {setting:<40} {'index' if row['time_adjusted'] else 'no':>5} {row['items']:>6} "
              f"{_percent(row['declined_share']):>8} {_percent(row['mdape']):>6} {_percent(row['bias']):>5} "
              f"{_percent(row['within_10']):>5} {_percent(row['within_20']):>5} {_percent(row['within_50']):>5} "
              f"{_percent(row['coverage']):>6} "
              f"{_percent(row['mean_width']):>6} {_percent(row['mdape_global_median']):>7} "
              f"{_percent(row['mdape_category_median']):>8}")
    print("  MdAPE: median absolute % error of the estimates given; bias: median of price / estimate - 1 (above 0: "
          "estimates run low);\n  inside: share of hammer prices inside the range; width: mean (high - low) / estimate; "
          "global, category: MdAPE of the median price of all lots, of the lot's category (on the same lots)")
    return 0


def _cmd_evaluate_suggest(engine: Engine, args: argparse.Namespace) -> int:
    evaluation = _with_progress(args, "describing lots from the others",
                                lambda total, progress: engine.evaluate_suggest(args.limit, total, progress))
    if args.json:
        print(json.dumps(evaluation.to_dict()))
        return 0
    print(f"suggested fields, each of {evaluation.lots} lots described from the others; a field is suggested where "
          f"that was right {evaluation.target_accuracy:.0%} of the time")
    print(f"  {'field':<20} {'lots':>6} {'values':>6} {'always':>7} {'majority':>8} {'answered':>8} {'right':>6}")
    for row in evaluation.fields:
        print(f"  {row['field'][:20]:<20} {row['lots']:>6} {row['distinct']:>6} {_percent(row['accuracy_always']):>7} "
              f"{_percent(row['accuracy_majority']):>8} {_percent(row['answered_share']):>8} "
              f"{_percent(row['accuracy_answered']):>6}" + (f"  never: {row['withheld']}" if row["withheld"] else ""))
    if not evaluation.fields:
        print("  no field to suggest: the lots have no category or field with more than one value")
    print("  always: right when always answering; majority: the most common value's accuracy; answered, right: at "
          "the calibrated thresholds")
    return 0


def _cmd_suggest(engine: Engine, args: argparse.Namespace) -> int:
    if bool(args.images) == bool(args.item_id):
        raise CliError("give photos of a new item, or --id ITEM")
    answers = []
    failures = 0
    if args.item_id:
        answers.append((args.item_id, engine.suggest_by_id(args.item_id)))
    for query in ([args.images] if args.together else args.images) if args.images else []:
        try:
            answers.append((" + ".join(query) if isinstance(query, list) else query, engine.suggest(query)))
        except ImageDecodeError as error:
            failures += 1
            print(one_line(f"lookalike: error: {query}: {error}"), file=sys.stderr)
    for query, suggestions in answers:
        if args.json:
            print(json.dumps({"query": query, "suggestions": suggestions.to_dict()}, ensure_ascii=False))
        else:
            _print_suggestions(query, suggestions)
    return 1 if failures else 0


def _cmd_calibrate(engine: Engine, args: argparse.Namespace) -> int:
    fitted = _with_progress(args, "calibrating", lambda total, progress: engine.calibration(True, total, progress))
    if args.json:
        print(fitted.to_json())
        return 0
    print(f"calibrated on {fitted.sample} of {fitted.lots} lots")
    if fitted.price is None:
        print("  prices: too few sold lots to calibrate a range (ranges shown are the similar lots' spread)")
    elif fitted.price.decline_all:
        print(f"  prices: {fitted.price.decline_all}")
    else:
        declining = (f"declined below a best match of {fitted.price.decline_below:.2f}" if fitted.price.decline_below > 0
                     else "never declined for distance")
        print(f"  prices: {fitted.level:.0%} ranges from {fitted.price.cases} lots priced from the others; {declining}")
    if fitted.index is not None:
        print(f"  price index: {fitted.index.annual_rate:+.1%} a year (log), from {fitted.index.pairs} pairs of dated sales")
    for name, found in fitted.fields.items():
        if found.withheld:
            print(f"  {name}: never suggested: {found.withheld}")
        else:
            print(f"  {name}: suggested when {found.min_share:.0%} of the vote and best match {found.min_score:.2f}: "
                  f"{found.answered:.0%} of lots, right {found.accuracy:.0%}")
    return 0


def _cmd_duplicates(engine: Engine, args: argparse.Namespace) -> int:
    on_total, on_progress, close = _progress(args.quiet or args.json, "checking lots")
    try:
        report = engine.duplicates(args.neighbours, args.min_score, on_total, on_progress)
    finally:
        close()
    if args.json:
        for group in report.groups:
            print(json.dumps(group.to_dict(), ensure_ascii=False))
        return 0
    print(f"{len(report.groups)} groups of lots showing the same object, among {report.lots} lots "
          f"({report.verified_pairs} pairs verified, {report.seconds:.1f} s)")
    for group in report.groups:
        print("  " + "  =  ".join(group.ids))
        for pair in group.pairs:
            evidence = "the same photo file" if pair.identical else f"{pair.inliers} inliers"
            print(f"      {pair.ids[0]} photo {pair.photos[0] + 1} ~ {pair.ids[1]} photo {pair.photos[1] + 1}: "
                  f"{evidence}, score {pair.score:.3f}")
    return 0


def _cmd_evaluate(engine: Engine, args: argparse.Namespace) -> int:
    on_total, on_progress, close = _progress(args.quiet or args.json, "evaluating")
    try:
        evaluation = engine.evaluate(args.queries, args.k, _filter(args), on_total, on_progress)
    finally:
        close()
    if args.json:
        print(json.dumps(evaluation.to_dict(), ensure_ascii=False))
        return 0
    print(f"{evaluation.queries} queries, {engine.count()} items, model {engine.model_id}, "
          f"query mode {engine.query_mode}, {evaluation.seconds / evaluation.queries * 1000:.0f} ms per query")
    for at, value in evaluation.recall.items():
        print(f"  recall@{at:<3} {value:.3f}")
    print(f"  mAP@{evaluation.k:<5} {evaluation.map_at_k:.3f}\n  MRR       {evaluation.mrr:.3f}\n"
          f"  P@{evaluation.k:<7} {evaluation.precision_at_k:.3f}")
    if evaluation.unknown_ids:
        shown = ", ".join(evaluation.unknown_ids[:5])
        print(f"  warning: {len(evaluation.unknown_ids)} relevant ids are not in the catalogue: {shown}")
    misses = evaluation.misses
    if misses and args.misses > 0:
        print(f"\nnot at rank 1 ({len(misses)}; first relevant rank, query, relevant -> what came first):")
        for outcome in misses[: args.misses]:
            rank = outcome.first_rank or f">{evaluation.k}"
            found = outcome.error or (outcome.ranked[0] if outcome.ranked else "nothing")
            print(f"  {rank!s:>4}  {outcome.query}  {'|'.join(outcome.relevant)} -> {found}")
    return 0


def _cmd_prepare(settings: Settings, args: argparse.Namespace) -> int:
    prepared = prepare_model(settings)
    if args.json:
        print(json.dumps(prepared))
    else:
        print(f"model {prepared['model_id']} ready in {prepared['cache']} ({prepared['seconds']:.1f} s)")
    return 0


def _cmd_demo(engine: Engine, args: argparse.Namespace) -> int:
    from lookalike.demo import DemoDataMissing, run_demo

    try:
        run_demo(engine, args.queries, _print_result, _print_estimate, _print_report,
                 lambda suggestions: _print_suggestions("suggested:", suggestions))
    except DemoDataMissing as error:
        raise CliError(str(error)) from None
    if args.no_serve:
        return 0
    return _cmd_serve(engine, args)


def _cmd_serve(engine: Engine, args: argparse.Namespace) -> int:
    import uvicorn

    from lookalike.api import create_app

    app = create_app(engine)
    writes = "enabled (bearer token)" if engine.settings.api_token else "disabled (set LOOKALIKE_API_TOKEN to enable)"
    print(f"\nlookalike is serving {engine.directory} at http://{args.host}:{args.port}/  "
          f"(API docs: /docs; writes {writes}; Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


COMMANDS = {
    "index": _cmd_index, "search": _cmd_search, "estimate": _cmd_estimate, "remove": _cmd_remove, "info": _cmd_info,
    "check": _cmd_check, "reindex": _cmd_reindex, "evaluate-price": _cmd_evaluate_price,
    "evaluate-suggest": _cmd_evaluate_suggest, "suggest": _cmd_suggest, "calibrate": _cmd_calibrate,
    "evaluate": _cmd_evaluate, "demo": _cmd_demo, "duplicates": _cmd_duplicates,
    "serve": _cmd_serve, "bench-index": _cmd_bench_index, "migrate-store": _cmd_migrate_store,
}
READ_ONLY = {"migrate-store", "search", "estimate", "info", "check", "evaluate-price", "evaluate", "serve", "bench-index", "duplicates",
             "suggest", "evaluate-suggest", "calibrate"}


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings with the command line's options laid over them."""
    model = args.model or (DEFAULT_MODEL if args.command == "reindex" else None)
    return Settings.from_environment(catalog=args.catalog, model=model, index=args.index, query_mode=args.query_mode,
                                     index_options=_index_options(args.index_option), milvus_uri=args.milvus_uri,
                                     store=args.store,
                                     verify_top=args.verify_top)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    engine = None
    debug = False
    reported = False  # one line per run: a failure to save after a reported error is the same failure
    try:
        settings = settings_from(args)
        debug = settings.debug
        if args.command in READ_ONLY and settings.store is None and not (settings.catalog / "catalog.sqlite").exists():
            raise CliError(f"no catalogue at {settings.catalog} (run `lookalike index` or `lookalike demo` first)")
        if args.command == "prepare":  # needs a model, not a catalogue
            return _cmd_prepare(settings, args)
        engine = Engine(settings, create=args.command not in READ_ONLY)
        return COMMANDS[args.command](engine, args)
    except LookalikeError as error:
        reported = True
        print(one_line(f"lookalike: error: {error}"), file=sys.stderr)
        return EXIT_CODES.get(error.kind, USAGE_ERROR)
    except (ValueError, OSError) as error:
        reported = True
        print(one_line(f"lookalike: error: {error}"), file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        reported = True
        print("lookalike: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the user gets one line; LOOKALIKE_DEBUG=1 shows the traceback
        if debug:
            raise
        reported = True
        print(one_line(f"lookalike: internal error: {type(error).__name__}: {error}"), file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            try:
                engine.close()
            except Exception as error:  # noqa: BLE001 - never hide the real outcome behind a close failure
                if not reported:
                    print(one_line(f"lookalike: error while saving: {error}"), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
