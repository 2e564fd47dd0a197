"""CLI: serve, a DICOM node (heavy imports stay inside the command body)."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from swinseg.choices import BACKENDS, SERVE_OUTPUT_TYPES
from swinseg.cli._common import choice_type, cli_errors, fail

OutputType = choice_type("ServeOutputType", SERVE_OUTPUT_TYPES)
Backend = choice_type("ServeBackend", BACKENDS)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("serve")(serve)


@cli_errors
def serve(
    port: int = typer.Option(11112, "--port", min=0, max=65535, help="TCP port to listen on (0: any free port)."),
    ae_title: str = typer.Option("SWINSEG", "--ae-title", help="The node's AE title."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A stored model's name (swinseg models), or a "
                                        "model card with --weights. (default: the default stored model)"),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weight file for --model."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="swinseg checkpoint or .onnx."),
    destination: Optional[str] = typer.Option(
        None, "--destination", help="Send each result by C-STORE to AET@HOST:PORT (tried again every minute "
        "until it is stored, and on restart).",
    ),
    output_type: OutputType = typer.Option(OutputType.seg, "--output-type", help="seg (DICOM SEG), rtstruct or "
                                           "nifti (kept under --store only)."),
    store: Path = typer.Option(
        Path("swinseg-node"), "--store", help="Folder of received instances, results and the journal; a node "
        "started again on it goes on where it stopped.",
    ),
    idle: float = typer.Option(10.0, "--idle", min=0.0, help="A series is complete (and predicted) once no "
                               "instance of it arrived for this many seconds."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    allow: Optional[str] = typer.Option(None, "--allow", help="Calling AE titles accepted, comma separated "
                                        "(others are rejected at association). Default: any."),
    max_disk: Optional[str] = typer.Option(None, "--max-disk", help="Cap on the bytes under --store (e.g. 20G): "
                                           "C-STORE is refused (out of resources) when full."),
    max_instance: str = typer.Option("64M", "--max-instance", help="Largest dataset accepted; larger ones are "
                                     "refused."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    backend: Backend = typer.Option(Backend.auto, "--backend", help="Network runtime, as for predict."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON objects (JSON Lines) instead of text lines."),
) -> None:
    """A DICOM node: receive CT/MR series, predict each once complete, send the result back by C-STORE.

    Received instances and a journal stay under --store: a node killed and started again loses nothing."""
    from swinseg import predict as lib
    from swinseg import serve as node_lib
    from swinseg.predict_options import PredictOptions
    from swinseg.store import resolve

    aets = tuple(a.strip() for a in allow.split(",") if a.strip()) if allow else ()
    if allow is not None and not aets:
        fail(f"--allow {allow!r}: no AE title given")
    options = node_lib.NodeOptions(
        store=store, ae_title=ae_title, host=host, port=port, idle=idle, output_type=output_type.value,
        destination=node_lib.Destination.parse(destination) if destination else None, allow=aets,
        max_disk=node_lib.parse_size(max_disk, "--max-disk") if max_disk else None,
        max_instance=node_lib.parse_size(max_instance, "--max-instance"),
    )
    log = node_lib.Log(sys.stdout, as_json)
    sources = resolve(model, weights, (checkpoint,) if checkpoint else ())
    if len(sources) != 1:
        fail(f"swinseg serve runs one model; the options name {len(sources)} (an ensemble): give one checkpoint")
    predict_options = PredictOptions(device=device, backend=backend.value)
    net, card = lib.load_source(sources[0], predict_options)
    predictor = lib.Predictor(net, card, predict_options)
    node = node_lib.Node(predictor, options, log)
    log("model", f"{card.name}: {len(card.classes)} classes on {predictor.device} ({predictor.backend}); "
        f"results: {output_type.value}" + (f", sent to {options.destination}" if options.destination else ""),
        model=card.name, device=str(predictor.device), backend=predictor.backend)

    def stop(signum: int, frame: Any) -> None:
        node.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        node.start()
        node.run()
    finally:
        node.shutdown()
    log("stopped", "stopped")
