"""Run gradients of an ONNX model in onnxruntime: prepare once, reverse per request."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
from onnx import ModelProto

from .errors import ModelError, OptionError
from .graph.check import capture_ort_log, declared_shape_errors, guard_gradient, kinked_ops
from .graph import build_gradient_model, fixed_batch, gradient_name, prepare_model, real_inputs, tap_model
from .graph.errors import GraphError
from .graph.reverse import RELU_MODES, SEED, TARGET
from .runtime import make_session

log = logging.getLogger(__name__)


class GradientGraphError(ModelError, GraphError):
    """The gradient engine cannot use a model's graph (an op without a backward rule, failed
    preparation): a :class:`GraphError` that is also an onnxplain :class:`ModelError`."""


class GradientEngine:
    """Gradients of one ONNX model, with one cached session per gradient request.

    Parameters
    ----------
    model : onnx.ModelProto
        The exported model; not modified.
    session_factory : callable(model, graph, **options) -> InferenceSession, optional
        Builds every session of the engine (``graph`` names it for the runtime record;
        ``options`` are :func:`onnxplain.runtime.make_session` keywords: ``config``, session
        config entries, and ``log_severity`` for the guard's warning-reading session). Default: CPU sessions from
        :func:`onnxplain.runtime.make_session`; :meth:`onnxplain.Model.gradient_engine` passes
        the model's provider and threads.
    input_shape : dict, optional
        Passed to :func:`prepare_model` (needed when non-batch dims are symbolic).
    prepare : bool
        Run :func:`prepare_model` (default). Pass False for an already prepared model.
    keep : sequence of str
        Tensor names that preparation must keep (layers that will be asked for).
    step_masks : {"hardsigmoid", "compare"}
        How rectifier masks are written (:func:`onnxplain.graph.build_gradient_model`):
        :meth:`onnxplain.Model.gradient_engine` asks for "compare" on every provider but
        ORT's CPU one.
    verify : bool
        Guard every gradient graph when it is first built (default): its forward outputs
        must equal the prepared model's, onnxruntime must not warn of a shape mismatch
        while running it, and for the plain gradient a directional derivative must agree
        with finite differences where those are reliable
        (:func:`onnxplain.graph.check.guard_gradient`). Costs one gradient run and one
        forward run on a batch of 2, and a forward run on a batch of 4 for the directional
        derivative of the first sample (the batch-2 runs and onnxruntime's warnings cover
        batch handling; a wrong rule shows on any sample), per graph built.
    """

    def __init__(self, model: ModelProto, *, session_factory: Callable[..., Any] | None = None,
                 input_shape=None, prepare: bool = True, keep: Sequence[str] = (), verify: bool = True,
                 step_masks: str = "hardsigmoid"):
        self.verify = verify
        self.step_masks = step_masks
        try:
            self.model = prepare_model(model, input_shape, keep=keep) if prepare else model
        except GraphError as exc:
            raise (exc if isinstance(exc, GradientGraphError) else GradientGraphError(str(exc))) from None
        self.session_factory = session_factory or (lambda proto, graph, **options: make_session(proto, **options))
        inputs = real_inputs(self.model.graph)
        self.input_name = inputs[0].name
        self.output_name = self.model.graph.output[0].name
        self.fixed_batch = fixed_batch(self.model)
        self._sessions: dict[tuple, Any] = {}

    def _session(self, model: ModelProto, graph: str, *, warnings: bool = False):
        # QDQ graphs mean float arithmetic with fake quantization: keep onnxruntime's QDQ
        # rewrites (pair removal, int8 kernel fusion) from changing what the gradient is
        # taken of. No effect on float graphs. ``warnings``: session-level warnings (the
        # buffer-reuse shape mismatch) reach stderr, where the build-time guard reads them.
        return self.session_factory(model, graph, config={"session.disable_quant_qdq": "1"},
                                    log_severity=1 if warnings else 4)

    def forward(self, inputs: np.ndarray, outputs: Sequence[str] | None = None
                ) -> dict[str, np.ndarray]:
        """Run the prepared model.

        Parameters
        ----------
        inputs : ndarray
            The batch for the first graph input.
        outputs : sequence of str, optional
            Tensor names to return (graph outputs or inner tensors); default all outputs.

        Returns
        -------
        dict of str to ndarray
        """
        names = tuple(outputs) if outputs else tuple(o.name for o in self.model.graph.output)
        key = ("forward", names)
        if key not in self._sessions:
            outputs = {o.name for o in self.model.graph.output}
            # graph outputs need no tapped copy (a copy of ViT-B/16's proto is ~0.25 s)
            proto = self.model if outputs.issuperset(names) else tap_model(self.model, list(names))
            self._sessions[key] = self._session(proto, "prepared graph (forward)")
        sess = self._sessions[key]
        if "float16" in sess.get_inputs()[0].type:  # a half-precision input (see reverse)
            inputs = np.asarray(inputs, dtype=np.float16)
        res = self._run(sess, {self.input_name: inputs}, list(names))
        return dict(zip(names, res))

    def run(self, inputs: np.ndarray, seed: np.ndarray | None, *, wrt: Sequence[str] | None = None,
            activations: Sequence[str] = (), reduction: str | None = None,
            relu_mode: str = "standard", rectifiers: Sequence[str] = ("Relu", "Clip")
            ) -> dict[str, np.ndarray]:
        """Forward pass plus d(sum(seed * reduction))/d(wrt), per sample.

        Parameters
        ----------
        inputs : ndarray, shape (N, ...)
            The batch for the first graph input.
        seed : ndarray, shape like the reduction tensor (N, ...), or None
            Per-sample weights of the reduction tensor (a one-hot row selects a class).
            None: each sample's largest entry of an (N, K) reduction tensor, chosen inside
            the graph (one run instead of a forward pass to find the class, then this);
            the chosen indices are returned as ``"target"``.
        wrt : sequence of str, optional
            Tensors to differentiate with respect to (default: the input).
        activations : sequence of str
            Inner tensors to return as well.
        reduction : str, optional
            The reduced tensor; default the first model output.
        relu_mode : {"standard", "guided", "deconvnet"}
        rectifiers : sequence of {"Relu", "Clip"}
            See :func:`build_gradient_model`.

        Returns
        -------
        dict of str to ndarray
            ``"output"`` (first model output), ``"reduction"``, each activation name,
            ``"grad:<name>"`` (float32, shaped like the tensor) for each wrt name, and
            ``"target"`` (int64, (N,)) when ``seed`` is None.
        """
        if relu_mode not in RELU_MODES:
            raise OptionError(f"The 'relu_mode' parameter must be one of {set(RELU_MODES)}; "
                             f"got {relu_mode!r}")
        wrt = tuple(wrt) if wrt is not None else (self.input_name,)
        reduction = reduction or self.output_name
        mode = "top" if seed is None else "input"
        key = ("grad", wrt, tuple(activations), reduction, relu_mode, tuple(rectifiers), mode)
        if key not in self._sessions:
            try:
                gm = build_gradient_model(self.model, reduction=reduction, wrt=wrt,
                                          activations=activations, relu_mode=relu_mode,
                                          rectifiers=rectifiers, seed=mode, step_masks=self.step_masks)
            except GraphError as exc:
                raise (exc if isinstance(exc, GradientGraphError) else GradientGraphError(str(exc))) from None
            self._sessions[key] = self._new_gradient_session(gm, reduction, wrt, relu_mode)
        sess = self._sessions[key] = self._sessions.pop(key)  # most recently used last (see release)
        inputs = np.asarray(inputs, dtype=np.float32)
        feeds = {self.input_name: inputs}
        if seed is not None:
            seed = np.asarray(seed, dtype=np.float32)
            if seed.shape[0] != inputs.shape[0]:
                raise OptionError(f"The 'seed' parameter must have one row per input sample "
                                 f"({inputs.shape[0]}); got shape {seed.shape}")
            feeds[SEED] = seed
        names = [self.output_name, reduction, *activations, *(gradient_name(w) for w in wrt)]
        names += [TARGET] if seed is None else []
        res = self._run(sess, feeds, names)
        out = {"output": res[0], "reduction": res[1]}
        out.update(zip(names[2:], res[2:]))
        return out

    def _new_gradient_session(self, gm: ModelProto, reduction: str, wrt, relu_mode: str):
        """A session for a new gradient graph, checked by the build-time guard."""
        if not self.verify:
            return self._session(gm, f"gradient graph ({relu_mode})")

        rng = np.random.default_rng(0)
        dims = [d.dim_value for d in real_inputs(self.model.graph)[0].type.tensor_type.shape.dim]
        shape = [2] + dims[1:]
        x = rng.standard_normal(shape).astype(np.float32)
        seed_shape = None
        for vi in gm.graph.input:
            if vi.name == SEED:
                seed_shape = [2] + [d.dim_value for d in vi.type.tensor_type.shape.dim[1:]]
        seed = rng.standard_normal(seed_shape).astype(np.float32) if seed_shape else None
        directional = relu_mode == "standard" and self.input_name in wrt
        names = [self.output_name, reduction]
        names += [gradient_name(self.input_name)] if self.input_name in wrt else []
        names = list(dict.fromkeys(names))

        def run_grad(xx, sd):
            feeds = {self.input_name: xx}
            if sd is not None:
                feeds[SEED] = sd
            return dict(zip(names, self._run(sess, feeds, names)))

        def run_forward(xx):
            return self.forward(xx, list(dict.fromkeys([self.output_name, reduction])))

        with capture_ort_log() as ort_log:
            sess = self._session(gm, f"gradient graph ({relu_mode})", warnings=True)
            try:
                probe = None
                if seed is None:  # seed chosen in the graph: the one-hot of the top entry
                    probe = run_grad(x, None)
                    top = np.argmax(np.asarray(probe[reduction]).reshape(2, -1), axis=1)
                    seed = np.zeros(np.shape(probe[reduction]), np.float32).reshape(2, -1)
                    seed[np.arange(2), top] = 1.0
                    seed = seed.reshape(np.shape(probe[reduction]))
                    feeds_seed = None
                else:
                    feeds_seed = seed

                def checked_run(xx, _seed):
                    # the guard's run on x with the in-graph seed is the probe run: not twice
                    return probe if probe is not None and xx is x else run_grad(xx, feeds_seed)

                guard_gradient(checked_run, run_forward, x, seed,
                               outputs=[self.output_name], reduction=reduction,
                               grad_name=gradient_name(self.input_name),
                               directional=directional, directional_samples=1,
                               drtol=0.3 if kinked_ops(self.model) else 0.05)
            except GraphError as exc:
                problem = str(exc)
            except Exception as exc:  # onnxruntime failed running the new graph
                problem = ("onnxruntime failed running the gradient graph: "
                           + str(exc).splitlines()[0][:300])
            else:
                problem = None
        mismatch = ort_log.mismatches()
        if mismatch or problem:
            detail = declared_shape_errors(gm, batches=(2,))
            parts = [problem] if problem else []
            if mismatch:
                parts.append(f"onnxruntime warned {len(mismatch)} times: "
                             f"{mismatch[0].split('] ', 1)[-1][:160]}")
            if detail:
                parts.append("first wrongly declared shape: " + detail[0])
            raise GradientGraphError("; ".join(parts) + " (please report this: the gradient graph "
                             "is wrong, no map was computed from it)")
        return sess

    def release(self, keep: int = 0) -> int:
        """Drop the cached gradient sessions except the ``keep`` most recently used; return how many went.

        A dropped session is rebuilt (gradient graph, build-time guard: about a second on
        EfficientNet-Lite0) when asked for again; the prepared graph and its forward sessions stay.
        Each gradient session holds its own copy of the weights and ONNX Runtime's per-session
        state (~60-90 MB for EfficientNet-Lite0); ``onnxplain explain`` keeps the last two.
        """
        grads = [k for k in self._sessions if k[0] == "grad"]
        drop = grads[:max(len(grads) - int(keep), 0)]
        for k in drop:
            del self._sessions[k]
        return len(drop)

    def _run(self, sess, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """session.run, one sample at a time when the prepared graph is pinned to batch 1."""
        n = next(iter(feeds.values())).shape[0]
        if self.fixed_batch is None or self.fixed_batch == n:
            return sess.run(names, feeds)
        if self.fixed_batch != 1:
            raise GraphError(f"the prepared model is fixed to batch {self.fixed_batch}; got "
                             f"a batch of {n}")
        parts = [sess.run(names, {k: v[i:i + 1] for k, v in feeds.items()}) for i in range(n)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]
