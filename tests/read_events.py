#!/usr/bin/env python3
"""Reads a TensorBoard log folder with TensorBoard's own Python code and prints it as JSON.

Used by tests/log_tensorboard.rs to check what ldm-run's event writer produces:

- `ea`: the classic `EventAccumulator` of each run (scalars, images with their stored
  width/height, the PNG header's real size);
- `provider`: the data provider `tensorboard --logdir` uses when it reads with Python
  (plugin_event_multiplexer + MultiplexerDataProvider): scalars, image blobs, text tensors;
- `hparams`: the HParams plugin's own request handlers over that provider: the experiment
  (columns) and the session groups (one row per run: hparams, metric values, status).

Usage: read_events.py LOGDIR   (exit status 3 when the tensorboard package is missing)
"""

import json
import os
import struct
import sys

try:
    from tensorboard import context as tb_context
    from tensorboard.backend.event_processing import data_provider as tb_data_provider
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import backend_context
    from tensorboard.plugins.hparams import get_experiment
    from tensorboard.plugins.hparams import list_session_groups
    from tensorboard.util import tensor_util
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"cannot import tensorboard ({e}); run: pip install tensorboard", file=sys.stderr)
    sys.exit(3)

STATUS = {v: k for k, v in api_pb2.Status.items()}
DATA_TYPE = {v: k for k, v in api_pb2.DataType.items()}


def png_header(data):
    """(width, height, color type) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    color_type = data[25]  # 0 = grey, 2 = RGB
    return [width, height, color_type]


def read_ea(run_dir):
    ea = event_accumulator.EventAccumulator(
        run_dir,
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.IMAGES: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    ea.Reload()
    tags = ea.Tags()
    out = {"scalars": {}, "images": {}}
    for tag in tags["scalars"]:
        out["scalars"][tag] = [[e.step, e.value] for e in ea.Scalars(tag)]
    for tag in tags["images"]:
        out["images"][tag] = [
            {
                "step": e.step,
                "width": e.width,
                "height": e.height,
                "png": png_header(e.encoded_image_string),
            }
            for e in ea.Images(tag)
        ]
    return out


def read_provider(logdir):
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        size_guidance={"scalars": 0, "images": 0, "tensors": 0},
        tensor_size_guidance={"images": 0, "text": 0, "scalars": 0},
    )
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = tb_data_provider.MultiplexerDataProvider(multiplexer, logdir)
    ctx = tb_context.RequestContext()
    runs = {}

    def run_entry(run):
        return runs.setdefault(run, {"scalars": {}, "images": {}, "text": {}})

    scalars = provider.read_scalars(
        ctx, experiment_id="", plugin_name="scalars", downsample=100000
    )
    for run, tags in scalars.items():
        for tag, data in tags.items():
            run_entry(run)["scalars"][tag] = [[d.step, d.value] for d in data]

    blobs = provider.read_blob_sequences(
        ctx, experiment_id="", plugin_name="images", downsample=100000
    )
    for run, tags in blobs.items():
        for tag, data in tags.items():
            entries = []
            for d in data:
                parts = [provider.read_blob(ctx, blob_key=b.blob_key) for b in d.values]
                entries.append(
                    {
                        "step": d.step,
                        "width": int(parts[0]),
                        "height": int(parts[1]),
                        "png": [png_header(p) for p in parts[2:]],
                    }
                )
            run_entry(run)["images"][tag] = entries

    texts = provider.read_tensors(
        ctx, experiment_id="", plugin_name="text", downsample=100000
    )
    for run, tags in texts.items():
        for tag, data in tags.items():
            entries = []
            for d in data:
                arr = d.numpy
                value = arr.item() if arr.ndim == 0 else arr.reshape(-1)[0]
                entries.append({"step": d.step, "shape": list(arr.shape), "text": value.decode("utf-8")})
            run_entry(run)["text"][tag] = entries

    return multiplexer, provider, runs


def read_hparams(logdir, multiplexer, provider):
    tb = base_plugin.TBContext(logdir=logdir, multiplexer=multiplexer, data_provider=provider)
    backend = backend_context.Context(tb)
    ctx = tb_context.RequestContext()
    exp = get_experiment.Handler(
        ctx, backend, "", api_pb2.GetExperimentRequest()
    ).run()
    experiment = {
        "hparams": [
            {"name": h.name, "type": DATA_TYPE.get(h.type, str(h.type))}
            for h in exp.hparam_infos
        ],
        "metrics": [[m.name.group, m.name.tag] for m in exp.metric_infos],
    }
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=100,
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
    )
    for h in exp.hparam_infos:
        request.col_params.add(hparam=h.name)
    for m in exp.metric_infos:
        request.col_params.add(metric=m.name)
    response = list_session_groups.Handler(ctx, backend, "", request).run()
    groups = []
    for g in response.session_groups:
        hparams = {}
        for k, v in g.hparams.items():
            kind = v.WhichOneof("kind")
            hparams[k] = getattr(v, kind)
        groups.append(
            {
                "name": g.name,
                "hparams": hparams,
                "metrics": {
                    m.name.tag: {"value": m.value, "step": m.training_step}
                    for m in g.metric_values
                },
                "sessions": [
                    {"name": s.name, "status": STATUS.get(s.status, str(s.status))}
                    for s in g.sessions
                ],
            }
        )
    return {"experiment": experiment, "session_groups": groups}


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    logdir = sys.argv[1]
    out = {"ea": {}}
    for name in sorted(os.listdir(logdir)):
        run_dir = os.path.join(logdir, name)
        if os.path.isdir(run_dir):
            out["ea"][name] = read_ea(run_dir)
    multiplexer, provider, runs = read_provider(logdir)
    out["provider"] = runs
    out["hparams"] = read_hparams(logdir, multiplexer, provider)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
