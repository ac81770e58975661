"""Calibration loop on tiny random models: objective, resume after interruption, errors, output."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from dmx.assignment import Assignment, apply_assignment
from dmx.calibrate import CalibrationConfig, calibrate, window_order
from dmx.checkpoint import CheckpointError, checkpoint_path
from dmx.llm.models import tiny_model
from dmx.llm.pipeline import quantize_model

WINDOWS = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
CFG = CalibrationConfig(steps=5, batch_size=1, target_bits=5.0, checkpoint_every=2, seed=3)


def _fresh(arch="llama"):
    model = tiny_model(arch, seed=0)
    return model, quantize_model(model)


def _offsets(layers):
    return torch.stack([layer.beta_hat.detach().clone() for _, layer in sorted(layers.items())])


def _bits_from_name(fmt: str) -> int:
    """Element width read off the OCP name (mxfp8/mxint8 -> 8, mxfp6 -> 6, mxfp4 -> 4)."""
    return int(re.match(r"mx(?:fp|int)(\d)", fmt).group(1))


class _StopAt:
    def __init__(self, step, exc):
        self.step, self.exc = step, exc

    def __call__(self, step, metrics):
        if step == self.step:
            raise self.exc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model, layers = _fresh()
    result = calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path_factory.mktemp("full"), progress=False)
    return result, _offsets(layers)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("simulated crash")], ids=["ctrl-c", "crash"])
def test_interrupted_run_resumes_to_identical_offsets(tmp_path, uninterrupted, exc):
    expected_assignment, expected_offsets = uninterrupted
    model, layers = _fresh()
    with pytest.raises(type(exc)):
        calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, progress=False, on_step=_StopAt(3, exc))
    saved = torch.load(checkpoint_path(tmp_path), weights_only=True)
    # Ctrl-C saves the step it finished; a crash loses at most one checkpoint interval
    assert saved["step"] == (3 if isinstance(exc, KeyboardInterrupt) else 2)
    model, layers = _fresh()  # a new process: fresh model, offsets from the checkpoint only
    resumed = calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert torch.equal(_offsets(layers), expected_offsets)
    assert resumed.formats == expected_assignment.formats
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_offsets_learn_and_weights_stay_frozen(uninterrupted):
    model, layers = _fresh()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith("beta_hat")}
    start = _offsets(layers)
    # t_end=0.4: a 1-step run is all annealing, and at T=20 the offset at beta_hat=0 has no gradient left
    calibrate(model, layers, WINDOWS, CalibrationConfig(steps=1, t_end=0.4), progress=False)
    assert not torch.equal(_offsets(layers), start)
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in before.items())


def test_gradient_accumulation_matches_the_larger_batch():
    a_model, a_layers = _fresh()
    calibrate(a_model, a_layers, WINDOWS, CalibrationConfig(steps=1, batch_size=2, grad_accum=1), progress=False)
    b_model, b_layers = _fresh()
    calibrate(b_model, b_layers, WINDOWS, CalibrationConfig(steps=1, batch_size=1, grad_accum=2), progress=False)
    assert torch.allclose(_offsets(a_layers), _offsets(b_layers), rtol=1e-5, atol=1e-6)


def test_zero_momentum_is_plain_sgd():
    """momentum=0 with the default nesterov=True runs (torch refuses Nesterov without momentum) and
    takes exactly one plain gradient step: beta_hat_new = beta_hat - lr * grad."""
    model, layers = _fresh()
    start = _offsets(layers)
    grads = []
    calibrate(model, layers, WINDOWS, CalibrationConfig(steps=1, batch_size=1, momentum=0.0, lr=0.5, t_end=0.4,
                                                        clip_grad_norm=0.0),
              progress=False, on_step=lambda *_: grads.append(
                  torch.stack([l.beta_hat.grad.clone() for _, l in sorted(layers.items())])))
    assert torch.allclose(_offsets(layers), start - 0.5 * grads[0], atol=1e-7)
    assert grads[0].abs().sum() > 0


def test_assignment_bits_and_provenance(uninterrupted, tmp_path):
    assignment, _ = uninterrupted
    assert len(assignment.formats) == 14
    assert set(assignment.formats.values()) <= {"mxfp4_e2m1", "mxfp8_e4m3"}
    independent = sum(_bits_from_name(f) for f in assignment.formats.values()) / 14
    assert assignment.element_bits == pytest.approx(independent)
    assert assignment.storage_bits == pytest.approx(independent + 8 / 32)
    prov = assignment.provenance
    assert prov["seed"] == 3 and prov["calibration_windows"]["count"] == 4 and prov["settings"]["target_bits"] == 5.0
    assert len(prov["calibration_windows"]["sha256"]) == 64
    assert {"torch", "transformers", "dmx"} <= set(prov["versions"])
    path = assignment.to_json(tmp_path / "a.json")
    assert Assignment.from_json(path).formats == assignment.formats


def test_applied_assignment_sets_standard_formats():
    model, layers = _fresh("qwen3")
    names = sorted(layers)
    formats = {n: ("mxfp8_e4m3" if i % 2 else "mxfp4_e2m1") for i, n in enumerate(names)}
    apply_assignment(layers, Assignment.from_formats(formats))
    assert {n: layers[n].format_name() for n in names} == formats
    with pytest.raises(ValueError, match="missing"):
        apply_assignment(layers, {names[0]: "mxfp4_e2m1"})


def test_lm_head_only_with_flag():
    model = tiny_model("llama")
    assert "lm_head" not in quantize_model(model)
    model = tiny_model("llama")
    layers = quantize_model(model, include_lm_head=True)
    assert "lm_head" in layers and type(model.lm_head).__name__ == "DMXLinear"
    assert type(model.model.embed_tokens).__name__ == "Embedding"


def test_budget_outside_family_is_rejected():
    for target in (3.5, 8.5):
        with pytest.raises(ValueError, match="outside the range"):
            CalibrationConfig(target_bits=target).validate()
    with pytest.raises(ValueError, match="outside the range"):
        CalibrationConfig(family="fp6_fp4", target_bits=7.0).validate()
    with pytest.raises(ValueError, match="valid families"):
        CalibrationConfig(family="fp16").validate()


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    model, layers = _fresh()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)
    checkpoint_path(tmp_path).write_bytes(b"\x80\x04 truncated garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="exists from an earlier run"):  # not overwritten silently
        calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, progress=False)
    checkpoint_path(tmp_path).unlink()
    calibrate(model, layers, WINDOWS, CalibrationConfig(steps=1, checkpoint_every=1),
              checkpoint_dir=tmp_path, progress=False)
    model, layers = _fresh()
    with pytest.raises(CheckpointError, match="settings differ"):
        calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)


def test_window_order_covers_every_window_each_epoch():
    order = window_order(5, 12, seed=1)
    assert sorted(order[:5].tolist()) == list(range(5)) and sorted(order[5:10].tolist()) == list(range(5))
    assert torch.equal(order, window_order(5, 12, seed=1))


def test_bfloat16_model_calibrates_with_float32_offsets():
    model = tiny_model("qwen3").to(torch.bfloat16)
    layers = quantize_model(model)
    result = calibrate(model, layers, WINDOWS, CalibrationConfig(steps=1), progress=False)
    assert all(layer.beta_hat.dtype == torch.float32 for layer in layers.values())
    assert torch.isfinite(_offsets(layers)).all() and len(result.formats) == 14


def _fresh_learned():
    from dmx.llm.rotation import RotationSpec, apply_rotation

    model = tiny_model("llama", seed=0)
    apply_rotation(model, RotationSpec("learned", seed=1))
    return model, quantize_model(model)


def _with_rotation(model, cfg):
    """The keywords that plug the model's (learned) rotation into calibrate(), as the CLI passes them."""
    from dmx.llm.rotation.training import rotation_setup, rotation_trainables

    return {"trainables": rotation_trainables(model, cfg), "model_setup": rotation_setup(model)}


def test_learned_rotation_is_trained_jointly_and_resumes_exactly(tmp_path):
    from dmx.llm.rotation.cayley import stiefel_error
    from dmx.llm.rotation import rotation_parameters, rotation_state

    cfg = CalibrationConfig(steps=3, batch_size=1, checkpoint_every=1, seed=3, rotation_lr=1.5)
    model, layers = _fresh_learned()
    start = [p.detach().clone() for p in rotation_parameters(model)]
    originals = [p for n, p in model.named_parameters() if n.endswith("original")]
    assert originals and not any(p.requires_grad for p in originals)  # weights frozen, only R1/R2 learn
    expected = calibrate(model, layers, WINDOWS, cfg, **_with_rotation(model, cfg), checkpoint_dir=tmp_path / "full",
                         progress=False)
    state = rotation_state(model)
    assert state.baked and rotation_parameters(model) == []  # folded into the weights on return
    assert not torch.equal(state.r1, start[0])  # the rotation did learn
    assert stiefel_error(state.r1) < 1e-5
    assert expected.provenance["rotation"]["kind"] == "learned"
    expected_offsets, expected_r = _offsets(layers), [state.r1, *state.r2]

    model, layers = _fresh_learned()
    with pytest.raises(KeyboardInterrupt):
        calibrate(model, layers, WINDOWS, cfg, **_with_rotation(model, cfg), checkpoint_dir=tmp_path / "cut",
                  progress=False, on_step=_StopAt(1, KeyboardInterrupt()))
    model, layers = _fresh_learned()  # a new process: the rotation comes from the checkpoint only
    resumed = calibrate(model, layers, WINDOWS, cfg, **_with_rotation(model, cfg), checkpoint_dir=tmp_path / "cut",
                        resume=True, progress=False)
    state = rotation_state(model)
    assert torch.equal(_offsets(layers), expected_offsets)
    assert all(torch.equal(a, b) for a, b in zip([state.r1, *state.r2], expected_r, strict=True))
    assert resumed.formats == expected.formats

    plain, plain_layers = _fresh()  # same checkpoint, no rotation: refused
    with pytest.raises(CheckpointError, match="rotation"):
        calibrate(plain, plain_layers, WINDOWS, cfg, **_with_rotation(plain, cfg), checkpoint_dir=tmp_path / "cut",
                  resume=True, progress=False)


def test_gradient_accumulation_rotates_the_weights_once_per_step(monkeypatch):
    """With grad_accum micro-batches the rotated weights are built once per step, and the learned
    rotation follows the same trajectory as when they are rebuilt for every micro-batch."""
    import contextlib

    from dmx.llm.rotation import rotation_state
    from dmx.llm.rotation.learned import _RotatedWeight

    cfg = CalibrationConfig(steps=2, batch_size=1, grad_accum=2, seed=1)
    calls = {"n": 0}
    real = _RotatedWeight._rotate

    def counting(self, w):
        calls["n"] += 1
        return real(self, w)

    monkeypatch.setattr(_RotatedWeight, "_rotate", counting)
    shared, shared_layers = _fresh_learned()
    calls["n"] = 0
    calibrate(shared, shared_layers, WINDOWS, cfg, **_with_rotation(shared, cfg), progress=False)
    assert calls["n"] == 2 * 14  # 14 rotated linears, once per step
    import dmx.llm.rotation.training

    monkeypatch.setattr(dmx.llm.rotation.training, "shared_rotated_weights", lambda model: contextlib.nullcontext())
    rebuilt, rebuilt_layers = _fresh_learned()
    calls["n"] = 0
    calibrate(rebuilt, rebuilt_layers, WINDOWS, cfg, **_with_rotation(rebuilt, cfg), progress=False)
    assert calls["n"] == 2 * 2 * 14  # rebuilt for every micro-batch
    a, b = rotation_state(shared), rotation_state(rebuilt)
    for x, y in zip([a.r1, *a.r2], [b.r1, *b.r2], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_offsets(shared_layers), _offsets(rebuilt_layers), rtol=1e-5, atol=1e-6)


def test_budget_formats_fill_the_budget_in_order_of_abs_beta_hat():
    """Hand-set offsets: the deployed high layers are exactly the k largest |beta_hat| (sign ignored),
    k = floor(n * (target - 4) / 4) for the plain mean; the threshold rule would pick another set."""
    from dmx.assignment import budget_formats

    _, layers = _fresh()
    names = sorted(layers)
    values = torch.linspace(-1.9, 1.7, len(names))[torch.randperm(len(names), generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        for n, v in zip(names, values):
            layers[n].beta_hat.fill_(float(v))
    for target in (4.0, 4.5, 5.0, 6.3, 8.0):
        k = int((target - 4) / 4 * len(names))
        expected_high = {names[i] for i in values.abs().argsort(descending=True)[:k].tolist()}
        got = budget_formats(layers, target)
        assert {n for n, f in got.items() if f == "mxfp8_e4m3"} == expected_high
        assert set(got.values()) <= {"mxfp4_e2m1", "mxfp8_e4m3"}
    assert sum(v.abs() > 1 for v in values) != int(len(names) / 4)  # the threshold rule is not at 5 bits here
    # weighting by weight elements: at or under the budget, and no further demoted layer fits back in
    sizes = {n: layers[n].linear.weight.numel() for n in names}
    got = budget_formats(layers, 5.0, weighting="elements")
    avg = Assignment.from_formats(got, weighting="elements", layer_sizes=sizes).element_bits
    assert avg <= 5.0
    order = sorted(names, key=lambda n: -abs(float(layers[n].beta_hat.detach())))
    first_low = next(n for n in order if got[n] == "mxfp4_e2m1")
    assert Assignment.from_formats({**got, first_low: "mxfp8_e4m3"}, weighting="elements",
                                   layer_sizes=sizes).element_bits > 5.0


def test_budget_rounding_never_exceeds_the_target_and_records_the_threshold_bits():
    target = 5.0
    model, layers = _fresh()
    result = calibrate(model, layers, WINDOWS, CalibrationConfig(steps=5, batch_size=1, target_bits=target, lr=3.0,
                                                                  seed=3, final_rounding="budget"), progress=False)
    offsets = {n: float(layers[n].beta_hat.detach()) for n in layers}
    threshold_bits = sum(8 if abs(v) > 1 else 4 for v in offsets.values()) / len(offsets)
    assert result.provenance["threshold_element_bits"] == pytest.approx(threshold_bits)
    assert result.provenance["settings"]["final_rounding"] == "budget"
    assert target - 4 / len(offsets) < result.element_bits <= target
    high = {n for n, f in result.formats.items() if f == "mxfp8_e4m3"}
    assert min(abs(offsets[n]) for n in high) >= max(abs(offsets[n]) for n in set(offsets) - high)
    assert {n: layers[n].format_name() for n in layers} == result.formats  # applied to the model


def test_bad_final_rounding_is_rejected():
    from dmx.assignment import budget_formats

    with pytest.raises(ValueError, match="unknown final_rounding 'exact'.*threshold"):
        CalibrationConfig(final_rounding="exact").validate()
    model = tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="tie=False"):
        budget_formats(quantize_model(model, tie=False), 5.0)


def test_a_finished_checkpoint_is_redeployed_with_the_other_rounding(tmp_path):
    from dmx.assignment import budget_formats

    cfg = CalibrationConfig(steps=3, batch_size=1, target_bits=5.0, lr=3.0, seed=1, checkpoint_every=3)
    model, layers = _fresh()
    threshold = calibrate(model, layers, WINDOWS, cfg, checkpoint_dir=tmp_path, progress=False)
    learned = _offsets(layers)
    model, layers = _fresh()
    steps = []
    budget = calibrate(model, layers, WINDOWS, dataclasses.replace(cfg, final_rounding="budget"),
                       checkpoint_dir=tmp_path, resume=True, progress=False, on_step=lambda s, m: steps.append(s))
    assert steps == [] and torch.equal(_offsets(layers), learned)  # nothing recomputed
    assert budget.formats == budget_formats(layers, 5.0) and budget.element_bits <= 5.0
    assert budget.provenance["threshold_element_bits"] == threshold.element_bits
    assert budget.provenance["final_metrics"] == threshold.provenance["final_metrics"] != {}
    with pytest.raises(CheckpointError, match="lam"):  # a setting of the trajectory still refuses
        calibrate(*_fresh(), WINDOWS, dataclasses.replace(cfg, lam=1.0), checkpoint_dir=tmp_path, resume=True,
                  progress=False)


def test_gradient_norm_is_clipped_to_the_configured_value():
    steps = {}
    for clip in (0.0, 1e-3):
        model, layers = _fresh()
        grads = []
        # plain SGD, lr 1: the step equals the (clipped) gradient; T stays 0.4 for the one step
        calibrate(model, layers, WINDOWS, CalibrationConfig(steps=1, batch_size=1, momentum=0.0, lr=1.0, t_end=0.4,
                                                            clip_grad_norm=clip, target_bits=4.5),
                  progress=False, on_step=lambda *_: grads.append(torch.stack(
                      [l.beta_hat.grad.clone() for _, l in sorted(layers.items())])))
        steps[clip] = _offsets(layers)  # started at beta_init = 0
        assert torch.allclose(steps[clip], -grads[0], atol=1e-9)
    assert steps[0.0].norm() > 1e-3  # unclipped, the step is larger than the cap ...
    # ... and clipping caps it (torch divides by norm + 1e-6, so a hair under the cap)
    assert steps[1e-3].norm() == pytest.approx(1e-3, rel=2e-3) and steps[1e-3].norm() <= 1e-3
    assert torch.allclose(steps[1e-3] / steps[1e-3].norm(), steps[0.0] / steps[0.0].norm(), atol=1e-5)


def test_a_fresh_run_starts_every_offset_at_beta_init():
    for init in (0.0, 1.0):
        model, layers = _fresh()
        with torch.no_grad():
            for layer in layers.values():
                layer.beta_hat.fill_(0.7)  # overwritten by the config's start
        calibrate(model, layers, WINDOWS, CalibrationConfig(steps=1, batch_size=1, lr=1e-9, beta_init=init),
                  progress=False)
        assert torch.allclose(_offsets(layers), torch.full((len(layers),), init), atol=1e-6)


def test_the_recipe_settings_are_validated():
    for bad in ({"clip_grad_norm": -1.0}, {"beta_init": float("nan")}, {"fractional_scale": "max"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CalibrationConfig(**bad).validate()


def test_a_checkpoint_from_before_the_recipe_change_does_not_resume_under_the_new_defaults(tmp_path):
    model, layers = _fresh()
    calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, progress=False)
    state = torch.load(checkpoint_path(tmp_path), weights_only=True)
    for key in ("beta_init", "clip_grad_norm", "fractional_scale"):
        del state["config"][key]  # what a checkpoint written before these settings holds
    torch.save(state, checkpoint_path(tmp_path))
    model, layers = _fresh()
    with pytest.raises(CheckpointError, match="beta_init: checkpoint 1.0 vs now 0.0"):
        calibrate(model, layers, WINDOWS, CFG, checkpoint_dir=tmp_path, resume=True, progress=False)
    model, layers = _fresh()  # the old recipe, spelled out, still resumes
    old = dataclasses.replace(CFG, beta_init=1.0, clip_grad_norm=0.0, fractional_scale="emax")
    calibrate(model, layers, WINDOWS, old, checkpoint_dir=tmp_path, resume=True, progress=False)


def _scaled(calls):
    """A tiny model whose final norm output is multiplied by a trainable scalar, as a plugged-in Trainable."""
    import contextlib

    from dmx.trainable import Trainable

    model, layers = _fresh()
    scale = torch.nn.Parameter(torch.tensor(1.0))
    model.model.norm.register_forward_hook(lambda module, args, out: out * scale)

    @contextlib.contextmanager
    def step_context():
        calls.append("step")
        yield

    trainable = Trainable(parameters=(scale,), make_optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
                          checkpoint_keys=("scale", "scale_optimizer"), step_context=step_context,
                          finish=lambda: calls.append("finish"))
    return model, layers, trainable, scale


def test_a_plugged_in_trainable_is_stepped_checkpointed_resumed_and_finished(tmp_path):
    cfg = CalibrationConfig(steps=3, batch_size=1, checkpoint_every=1, seed=2)
    calls = []
    model, layers, trainable, scale = _scaled(calls)
    calibrate(model, layers, WINDOWS, cfg, trainables=[trainable], progress=False)
    assert calls == ["step"] * 3 + ["finish"] and float(scale.detach()) != 1.0
    expected_scale, expected_offsets = scale.detach().clone(), _offsets(layers)

    calls = []
    model, layers, trainable, scale = _scaled(calls)
    with pytest.raises(KeyboardInterrupt):
        calibrate(model, layers, WINDOWS, cfg, trainables=[trainable], checkpoint_dir=tmp_path, progress=False,
                  on_step=_StopAt(1, KeyboardInterrupt()))
    saved = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert saved["scale"] == [scale.detach()] and "scale_optimizer" in saved and "beta_hat" in saved
    model, layers, trainable, scale = _scaled(calls)
    calibrate(model, layers, WINDOWS, cfg, trainables=[trainable], checkpoint_dir=tmp_path, resume=True, progress=False)
    assert torch.equal(scale.detach(), expected_scale) and torch.equal(_offsets(layers), expected_offsets)

    from dmx.trainable import Trainable

    clash = Trainable(parameters=(scale,), make_optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
                      checkpoint_keys=("beta_hat", "step"))
    with pytest.raises(ValueError, match=r"checkpoint entries \['beta_hat', 'step'\] are claimed twice"):
        calibrate(*_fresh(), WINDOWS, cfg, trainables=[clash], progress=False)
