"""FAKE: a Triton Python-backend model that stands in for the ``pytorch_libtorch`` platform.

Why a fake: the tritonserver bundled in nvidia-pytriton ships only the Python
backend, and libtorch cannot be installed here, so the step models of
``MODELBUS_TRITON__BACKEND=pytorch`` are served by this file in tests. It holds
itself to the libtorch backend's rules that our generated config must meet,
so a config that would not load on NVIDIA's images fails here too:

- TYPE_STRING inputs must be one-dimensional with no batching, and reach the
  model as ``List[str]`` (libtorch's ``ValidateInputs``);
- inputs bind to ``forward`` arguments by name, outputs to the returned tuple
  by the ``<name>__<index>`` suffix;
- the TorchScript file is ``<version>/model.pt``.
"""

import json
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        batching = int(config.get("max_batch_size") or 0) > 0
        for io in config["input"]:
            dims = [int(d) for d in (io.get("reshape") or {}).get("shape", io["dims"])]
            if io["data_type"] == "TYPE_STRING" and len(dims) + (1 if batching else 0) > 1:
                raise ValueError("Triton only supports 1 dimensional List of String as input for "
                                 f"'{io['name']}' for model '{args['model_name']}'")
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        self.module = torch.jit.load(str(path)).eval()
        params = [a.name for a in self.module.forward.schema.arguments[1:]]
        names = [io["name"] for io in config["input"]]
        missing = [n for n in names if n not in params]
        if missing or len(names) != len(params):
            raise ValueError(f"config inputs {names} do not match forward({', '.join(params)})")
        self.params = params
        self.strings = {io["name"] for io in config["input"] if io["data_type"] == "TYPE_STRING"}
        self.outputs = []
        for io in config["output"]:
            stem, sep, index = io["name"].rpartition("__")
            if not sep or not index.isdigit():
                raise ValueError(f"output '{io['name']}' does not follow the <name>__<index> convention")
            self.outputs.append((io["name"], int(index), pb_utils.triton_string_to_numpy(io["data_type"])))

    def execute(self, requests):
        responses = []
        for request in requests:
            args = []
            for name in self.params:
                arr = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                if name in self.strings:
                    args.append([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr])
                else:
                    args.append(torch.from_numpy(arr))
            try:
                with torch.inference_mode():
                    out = self.module(*args)
            except Exception as exc:  # noqa: BLE001 - libtorch answers a failing forward with an error response
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            out = out if isinstance(out, tuple) else (out,)
            tensors = [pb_utils.Tensor(name, out[i].numpy().astype(dtype, copy=False))
                       for name, i, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
