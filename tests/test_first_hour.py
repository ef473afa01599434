"""The mistakes a new user makes first get an error that leads to the fix
that works, and change nothing."""

import os

import numpy as np
import pytest

import adamc
from adamc import reference

IMPLS = [adamc, reference]


def fake_array_type(module, name="Tensor"):
    """A stand-in for another library's array class (torch is not a test
    dependency): the module name and the array protocol are what adamc sees."""
    return type(name, (), {"__module__": module,
                           "__array__": lambda self, dtype=None, copy=None: np.zeros(3)})


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_tensor_parameters_get_the_view_advice(impl):
    t = fake_array_type("torch")()
    with pytest.raises(TypeError, match=r"params\[0\] is a torch.Tensor; .*p\.detach\(\)\.numpy\(\)"
                                        r".*same dtype.*would not train.*Using adamc with PyTorch"):
        impl.Adam([t])
    w = np.zeros(3)
    opt = impl.Adam([w])
    with pytest.raises(TypeError, match=r"grads\[0\] is a torch.Tensor; .*p\.grad\.numpy\(\) "
                                        r"\(a copy is fine for a gradient") as e:
        opt.step([t])
    assert "would not train" not in str(e.value)   # (a review: wrong for a gradient)
    assert not w.any()


@pytest.mark.parametrize("impl", IMPLS)
def test_other_array_libraries_are_told_a_copy_would_not_train(impl):
    a = fake_array_type("jax", "Array")()
    with pytest.raises(TypeError, match=r"params\[0\] is a jax.Array; .*may copy it.*step the "
                                        r"copy.*keep using it"):
        impl.Adam([a])
    w = np.zeros(3)
    with pytest.raises(TypeError, match=r"grads\[0\] is a jax.Array; convert it with "
                                        r"np.asarray\(g\) \(a copy is fine"):
        impl.Adam([w]).step([a])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bad, msg", [
    ([0.0, 1.0], r"np\.asarray\(x, dtype=np\.float32\) and keep using that array"),
    (np.zeros(3, np.complex64), r"\.astype\(np\.float32\) and keep using that array"),
    (np.zeros(3, np.int32), r"\.astype\(np\.float32\) and keep using that array"),
    (np.zeros(6)[::2], r"np\.ascontiguousarray\(x\) and keep using that array"),
])
def test_parameter_conversion_hints_say_keep_the_converted_array(impl, bad, msg):
    with pytest.raises((TypeError, ValueError), match=msg):
        impl.Adam([bad])


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_conversion_hints_do_not(impl):
    w = np.zeros(3)
    opt = impl.Adam([w])
    with pytest.raises(TypeError) as e:
        opt.step([np.zeros(3, np.complex64)])
    assert "keep using" not in str(e.value)


@pytest.mark.parametrize("impl", IMPLS)
def test_step_without_gradients_and_zero_grad_explain(impl):
    w = np.ones(3)
    opt = impl.Adam([w])
    with pytest.raises(TypeError, match=r"step\(\) needs the gradients: adamc takes the "
                                        r"gradients as step's argument, opt\.step\(\[g0, g1, "
                                        r"\.\.\.\]\).*does not read a \.grad"):
        opt.step()
    with pytest.raises(TypeError, match=r"zero_grad\(\) has nothing to do: .*opt\.step\(\[g0"):
        opt.zero_grad()
    assert (w == 1).all() and opt.state_dict()["state"] == {}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fused", [False, True])
def test_a_closure_is_told_to_pass_gradients(impl, fused):
    w = np.ones(3)
    opt = impl.Adam([w])
    opt.step([np.ones(3)])
    before, w0 = opt.state_dict(), w.copy()
    with pytest.raises(TypeError, match=r"step\(\) got a function \(torch's step\(closure\)\); "
                                        r"adamc does not evaluate the loss: .*opt\.step\(\[g0"):
        opt.step(lambda: 1.0, **({"max_grad_norm": 1.0} if fused else {}))
    after = opt.state_dict()
    np.testing.assert_array_equal(w, w0)
    assert after["state"][0]["step"] == 1
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("key, why", [("foreach", "one fused pass"), ("fused", "one fused pass"),
                                      ("capturable", "CUDA graphs"),
                                      ("differentiable", "autograd graph")])
def test_torch_only_keywords_say_why_they_are_not_here(impl, cls, key, why):
    with pytest.raises(TypeError, match=rf"{cls}\(\) got {key}=True, a torch\.optim option "
                                        rf"with no counterpart in adamc \(.*{why}.*\); drop it"):
        getattr(impl, cls)([np.ones(3)], lr=0.1, **{key: True})
    with pytest.raises(TypeError, match=rf"^param_groups\[0\] got {key}=None, .*{why}"):
        getattr(impl, cls)([{"params": [np.ones(3)], key: None}])
    opt = getattr(impl, cls)([np.ones(3)])
    with pytest.raises(TypeError, match=rf"^param_groups\[1\] got {key}=False, .*{why}"):
        opt.add_param_group({"params": [np.ones(2)], key: False})
    assert len(opt.param_groups) == 1
    w, g = np.ones(3), np.ones(3)
    m, v = np.zeros(3), np.zeros(3)
    with pytest.raises(TypeError, match=rf"adam_step\(\) got {key}=.*{why}"):
        impl.adam_step(w, g, m, v, step=1, **{key: False})
    assert (w == 1).all() and (m == 0).all()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bogus'"):
        getattr(impl, cls)([np.ones(3)], bogus=True)


def test_save_state_into_a_missing_directory_names_the_users_path(tmp_path):
    w = np.ones(3)
    opt = adamc.Adam([w])
    opt.step([np.ones(3)])
    path = tmp_path / "ckpt" / "opt.npz"
    with pytest.raises(FileNotFoundError) as e:
        adamc.save_state(opt, path)
    text = str(e.value)
    assert str(path) in text and "does not exist" in text and ".tmp" not in text
    assert "os.makedirs" in text
    assert not (tmp_path / "ckpt").exists() and os.listdir(tmp_path) == []


def test_real_torch_tensors():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match=r"p\.detach\(\)\.numpy\(\)"):
        adamc.Adam([p])
    w = p.detach().numpy()  # the advice works: a view, stepped in place
    opt = adamc.Adam([w], lr=0.1)
    opt.step([np.ones(3, np.float32)])
    assert (p.detach() < 0).all()


def test_a_torch_state_dict_says_how_to_convert():
    """A first-hour review: loading torch.optim.Adam's state_dict said only
    'must be a numpy.ndarray, got Tensor'."""
    w = np.zeros(3, np.float32)
    opt = adamc.Adam([w])
    t = fake_array_type("torch")()
    sd = {"state": {0: {"step": 1, "exp_avg": t, "exp_avg_sq": t}},
          "param_groups": [{**opt.state_dict()["param_groups"][0]}]}
    with pytest.raises(TypeError, match=r"\['exp_avg'\] must be a numpy.ndarray, got Tensor; "
                                        r"convert a torch.optim state_dict with "
                                        r"adamc\.interop\.from_torch\(sd\)"):
        opt.load_state_dict(sd)
    assert opt.state_dict()["state"] == {}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pdt, mdt, kw, match", [
    (np.float32, np.float64, {}, r"^exp_avg in float64 is for float64 parameters; param is "
                                 r"float32: pass float32 moments"),
    (np.float64, np.float16, {}, r"^exp_avg in float16 with param in float64: .*pass float64 "
                                 r"moments"),
    (np.float64, np.uint8, {}, r"^uint8 \(8-bit\) exp_avg with param in float64"),
    (np.float32, np.uint8, {"amsgrad": True}, r"^uint8 \(8-bit\) exp_avg with amsgrad=True: "
                                              r".*or float moments$"),
    (np.float32, np.float32, {"master_param": True}, r"^master_param given, but param is "
                                                     r"float32: .*drop master_param$"),
])
def test_adam_step_storage_errors_name_its_buffers(impl, pdt, mdt, kw, match):
    """adam_step has no state_dtype or master_weights keyword: its storage
    errors named them (a review)."""
    p, g = np.ones(300, pdt), np.ones(300, pdt)
    m, v = np.zeros(300, mdt), np.zeros(300, mdt)
    kw = dict(kw)
    if mdt == np.uint8:
        kw = {**kw, "exp_avg_absmax": np.ones(2, np.float32),
              "exp_avg_sq_absmax": np.ones(2, np.float32)}
    if kw.get("amsgrad"):
        kw["max_exp_avg_sq"] = np.zeros(300, np.float32)
    if kw.get("master_param"):
        kw["master_param"] = p.copy()
    with pytest.raises(ValueError, match=match) as e:
        impl.adam_step(p, g, m, v, step=1, **kw)
    assert "state_dtype" not in str(e.value) and "master_weights" not in str(e.value)
    assert (p == 1).all() and not m.any()
