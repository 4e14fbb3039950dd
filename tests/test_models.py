"""Tests for autosparse_jax.models: architectures, param counts, apply helpers."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import masks, models, train

NATURAL_SHAPES = {
    "lenet300_100": (28, 28, 1),
    "lenet5": (28, 28, 1),
    "lenet5_bn": (28, 28, 1),
    "mlp300_200_100_50": (28, 28, 1),
}
CIFAR_SHAPE = (32, 32, 3)
BN_MODELS = ("lenet5_bn", "vgg11_bn", "vgg16_bn", "vgg19_bn", "resnet20", "resnet18")
SMALL_MODELS = ("lenet300_100", "lenet5", "conv2", "conv4", "conv6", "resnet20")

# Hand counts, 10 classes. conv(k, i, o) = k*k*i*o + o (bias), dense(i, o) = i*o + o,
# BN(c) = 2c (scale, offset; running mean/var are model state, not params).
EXPECTED_PARAMS = {
    # dense(784, 300) + dense(300, 100) + dense(100, 10) = 235500 + 30100 + 1010
    "lenet300_100": 266_610,
    # 235500 + dense(300, 200) 60200 + dense(200, 100) 20100 + dense(100, 50) 5050
    # + dense(50, 10) 510
    "mlp300_200_100_50": 321_360,
    # conv(5,1,6) + conv(5,6,16) + dense(5*5*16=400, 120) + dense(120, 84)
    # + dense(84, 10) = 156 + 2416 + 48120 + 10164 + 850
    "lenet5": 61_706,
    # + BN 2 * (6 + 16)
    "lenet5_bn": 61_750,
    # conv(3,3,64) + conv(3,64,64) + dense(16*16*64, 256) + dense(256, 256)
    # + dense(256, 10) = 1792 + 36928 + 4194560 + 65792 + 2570
    "conv2": 4_301_642,
    # 1792 + 36928 + conv(3,64,128) 73856 + conv(3,128,128) 147584
    # + dense(8*8*128, 256) 2097408 + 65792 + 2570
    "conv4": 2_425_930,
    # 260160 (Conv-4 convs) + conv(3,128,256) 295168 + conv(3,256,256) 590080
    # + dense(4*4*256, 256) 1048832 + 65792 + 2570
    "conv6": 2_262_602,
    # convs 64 | 128 | 256 256 | 512 512 | 512 512 (with bias):
    # 1792 + 73856 + 295168 + 590080 + conv(3,256,512) 1180160
    # + 3 * conv(3,512,512) 2359808 + dense(512, 10) 5130
    "vgg11": 9_225_610,
    # + BN 2 * (64 + 128 + 2*256 + 4*512) = 2 * 2752
    "vgg11_bn": 9_231_114,
    # convs 64 64 | 128 128 | 256 x3 | 512 x3 | 512 x3:
    # 1792 + 36928 + 73856 + 147584 + 295168 + 2*590080 + 1180160
    # + 5*2359808 + 5130
    "vgg16": 14_719_818,
    # + BN 2 * (2*64 + 2*128 + 3*256 + 6*512) = 2 * 4224
    "vgg16_bn": 14_728_266,
    # VGG-16 + conv(3,256,256) 590080 + 2 * conv(3,512,512) 2359808
    "vgg19": 20_029_514,
    # + BN 2 * (2*64 + 2*128 + 4*256 + 8*512) = 2 * 5504
    "vgg19_bn": 20_040_522,
    # No conv bias. stem 3*9*16 + BN 32 = 464; stage 1: 3 * (2*2304 + 64) = 14016;
    # stage 2: (16*9*32 + 32*9*32 + 128 + 1x1 16*32 + 64) + 2 * (2*9216 + 128)
    # = 14528 + 37120; stage 3: (32*9*64 + 64*9*64 + 256 + 32*64 + 128)
    # + 2 * (2*36864 + 256) = 57728 + 147968; head dense(64, 10) 650
    "resnet20": 272_474,
    # stem 3*9*64 + 128 = 1856; stage 1: 2 * (2*36864 + 256) = 147968;
    # stage 2: (73728 + 147456 + 512 + 8192 + 256) + (2*147456 + 512) = 525568;
    # stage 3: (294912 + 589824 + 1024 + 32768 + 512) + (2*589824 + 1024) = 2099712;
    # stage 4: (1179648 + 2359296 + 2048 + 131072 + 1024) + (2*2359296 + 2048)
    # = 8393728; head dense(512, 10) 5130
    "resnet18": 11_173_962,
}


# Cheaper XLA compiles (what jax_disable_most_optimizations sets, as in
# test_criteria): compiling, not running, dominates these small programs.
_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# One compiled init per (model, input shape) instead of Flax's op-by-op init.
_init = jax.jit(models.init_params, static_argnums=(1, 2), compiler_options=_FAST)


def _shape(name):
    return NATURAL_SHAPES.get(name, CIFAR_SHAPE)


def _abstract_init(model, input_shape):
    return jax.eval_shape(
        lambda k: models.init_params(k, model, input_shape), jax.random.key(0)
    )


def _images(key, batch, input_shape):
    return jax.random.normal(key, (batch, *input_shape), jnp.float32)


def test_models_registry_is_complete_and_read_only():
    assert sorted(models.MODELS) == sorted(EXPECTED_PARAMS)
    with pytest.raises(TypeError):
        models.MODELS["mine"] = models.MLP


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_param_count(name):
    params, _ = _abstract_init(models.get_model(name), _shape(name))
    assert models.count_params(params) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_output_shape_and_head(name):
    model = models.get_model(name, num_classes=7)
    params, state = _abstract_init(model, _shape(name))
    x = jax.ShapeDtypeStruct((3, *_shape(name)), jnp.float32)
    logits = jax.eval_shape(
        lambda p, s, x: models.make_apply_fn(model, s)(p, x), params, state, x
    )
    assert logits.shape == (3, 7)
    assert params["head"]["kernel"].shape[-1] == 7
    others = [
        leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if path[0].key != "head" and leaf.ndim >= 2
    ]
    assert all(shape[-1] != 7 for shape in others)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_models_forward(key, name):
    init_key, data_key = jax.random.split(key)
    model = models.get_model(name, num_classes=5)
    params, state = _init(init_key, model, _shape(name))
    apply_fn = jax.jit(models.make_apply_fn(model, state), compiler_options=_FAST)
    logits = apply_fn(params, _images(data_key, 2, _shape(name)))
    assert logits.shape == (2, 5)
    assert logits.dtype == jnp.float32
    assert bool(jnp.isfinite(logits).all())


@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
def test_lenet5_works_on_mnist_and_cifar_shapes(key, input_shape):
    model = models.get_model("lenet5")
    params, _ = _init(key, model, input_shape)
    first_dense = params["Dense_0"]["kernel"].shape[0]
    assert first_dense == {(28, 28, 1): 400, (32, 32, 3): 576}[input_shape]
    logits = models.make_apply_fn(model)(params, _images(key, 2, input_shape))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_batch_stats_are_state_not_params(name):
    params, state = _abstract_init(models.get_model(name), _shape(name))
    param_names = {
        path[-1].key for path, _ in jax.tree_util.tree_leaves_with_path(params)
    }
    assert not param_names & {"mean", "var"}
    if name in BN_MODELS:
        assert set(state) == {"batch_stats"}
        stat_names = {
            path[-1].key for path, _ in jax.tree_util.tree_leaves_with_path(state)
        }
        assert stat_names == {"mean", "var"}
        assert "scale" in param_names
    else:
        assert state == {}


def test_resnet_inference_deterministic_and_jittable(key):
    model = models.get_model("resnet20")
    params, state = _init(key, model, (16, 16, 3))
    x = _images(key, 4, (16, 16, 3))
    apply_fn = models.make_apply_fn(model, state)
    first = apply_fn(params, x)
    np.testing.assert_array_equal(first, apply_fn(params, x))
    np.testing.assert_allclose(
        jax.jit(apply_fn)(params, x), first, rtol=1e-5, atol=1e-5
    )
    # Inference mode: each example's logits do not depend on the rest of the batch.
    np.testing.assert_allclose(apply_fn(params, x[:1]), first[:1], rtol=1e-5, atol=1e-5)


def test_resnet_train_mode_uses_batch_statistics(key):
    model = models.get_model("resnet20")
    params, state = _init(key, model, (16, 16, 3))
    x = 3.0 + 2.0 * _images(key, 4, (16, 16, 3))
    infer = models.make_apply_fn(model, state)(params, x)
    train_fn = models.make_apply_fn(model, state, train=True)
    train = train_fn(params, x)
    assert train.shape == infer.shape
    assert not np.allclose(train, infer)
    # Batch statistics: an example's logits depend on the rest of the batch.
    assert not np.allclose(train_fn(params, x[:2])[:1], train[:1])


def test_train_flag_is_ignored_without_batch_norm(key):
    model = models.get_model("lenet5")
    params, state = _init(key, model, (28, 28, 1))
    x = _images(key, 2, (28, 28, 1))
    np.testing.assert_array_equal(
        models.make_apply_fn(model, state, train=True)(params, x),
        models.make_apply_fn(model)(params, x),
    )


def test_missing_state_for_batch_norm_inference_raises(key):
    model = models.get_model("resnet20")
    params, _ = _init(key, model, (16, 16, 3))
    with pytest.raises(ValueError, match="model_state"):
        models.make_apply_fn(model)(params, _images(key, 2, (16, 16, 3)))


@pytest.mark.parametrize(
    ("name", "train"), [("lenet300_100", False), ("resnet20", True)]
)
def test_grad_through_apply_fn(key, name, train):
    input_shape = _shape(name) if name == "lenet300_100" else (16, 16, 3)
    model = models.get_model(name)
    params, state = _init(key, model, input_shape)
    apply_fn = models.make_apply_fn(model, state, train=train)
    x = _images(key, 4, input_shape)

    def loss(p):
        return jnp.mean(jax.nn.logsumexp(apply_fn(p, x), axis=-1))

    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["head"]["kernel"]).sum()) > 0.0


def test_mlp_hidden_sizes():
    params, _ = _abstract_init(models.MLP(hidden_sizes=(5,), num_classes=3), (2, 2, 1))
    assert models.count_params(params) == (4 * 5 + 5) + (5 * 3 + 3)


def test_unknown_model_name_raises():
    with pytest.raises(ValueError, match="lenet300_100.*resnet18"):
        models.get_model("resnet1000")


@pytest.mark.parametrize("bad", [(28, 28), (28, 28, 1.0), (1, 28, 28, 1), (0, 28, 1)])
def test_init_params_validates_input_shape(key, bad):
    with pytest.raises(ValueError, match="input_shape"):
        models.init_params(key, models.get_model("lenet300_100"), bad)


def test_invalid_architecture_fields_raise(key):
    with pytest.raises(ValueError, match="VGG depth"):
        models.init_params(key, models.VGG(depth=12), CIFAR_SHAPE)
    with pytest.raises(ValueError, match="NHWC"):
        models.LeNet5().init(key, jnp.zeros((28, 28, 1)))


@pytest.mark.parametrize(
    "name, input_shape, option",
    [
        ("lenet5", (28, 28, 1), "fast_conv_grad"),
        ("conv2", (32, 32, 3), "fast_conv_grad"),
        ("resnet20", (32, 32, 3), "fast_conv_grad"),
        ("lenet5", (28, 28, 1), "batch_minor"),
        ("lenet5_bn", (28, 28, 1), "batch_minor"),
        ("conv2", (32, 32, 3), "batch_minor"),
        ("conv6", (32, 32, 3), "batch_minor"),
        ("resnet20", (32, 32, 3), "batch_minor"),
    ],
)
def test_fast_conv_options_give_same_params_outputs_and_gradients(
    name, input_shape, option
):
    plain = models.get_model(name)
    fast = models.get_model(name, **{option: True})
    params, state = _init(jax.random.key(0), plain, input_shape)
    fast_params, _ = _init(jax.random.key(0), fast, input_shape)
    chex.assert_trees_all_equal(fast_params, params)
    x = jax.random.normal(jax.random.key(1), (2, *input_shape))

    def grad(model):  # jitted: one compile, not the op-by-op custom VJP
        apply_fn = models.make_apply_fn(model, state, train=True)
        loss = lambda p: (apply_fn(p, x) ** 2).sum()  # noqa: E731
        return jax.jit(jax.grad(loss), compiler_options=_FAST)

    def outputs(model):
        apply_fn = models.make_apply_fn(model, state, train=True)
        return jax.jit(apply_fn, compiler_options=_FAST)(params, x)

    def updated_state(model):  # BatchNorm's running statistics after a step
        variables = {"params": params, **state}
        apply = functools.partial(
            models.apply_model, model, train=True, mutable=["batch_stats"]
        )
        return jax.jit(apply, compiler_options=_FAST)(variables, x)[1]

    # float32 rounding only: batch_minor sums in another order, so each leaf is
    # compared on the scale of its largest entry (Conv-6: ~1e-6 of it).
    _assert_close_on_scale(outputs(fast), outputs(plain))
    grads = [grad(model)(params) for model in (fast, plain)]
    if state:  # BatchNorm follows every conv
        scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[1]))
        for g in grads:
            _pop_zero_conv_bias_grads(g, scale)
    _assert_close_on_scale(*grads)
    if state:
        _assert_close_on_scale(updated_state(fast), updated_state(plain))


def _assert_close_on_scale(got, expected, rel: float = 2e-5) -> None:
    """Every leaf within ``rel`` times its largest expected magnitude."""
    chex.assert_trees_all_equal_shapes(got, expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        scale = float(jnp.abs(e).max())
        assert scale > 0
        np.testing.assert_allclose(g, e, rtol=0, atol=rel * scale)


def _pop_zero_conv_bias_grads(grads: dict, scale: float) -> None:
    """Removes the conv biases' gradients, after checking they are zero up to
    rounding: train-mode BatchNorm after a conv removes its bias exactly."""
    for name in [n for n in grads if n.startswith("Conv_") and "bias" in grads[n]]:
        bias = grads[name].pop("bias")
        assert float(jnp.abs(bias).max()) < 1e-6 * scale


def test_batch_minor_keeps_forward_mode_and_compiles_the_epoch_once():
    plain, fast = models.LeNet5(), models.LeNet5(batch_minor=True)
    params, state = _init(jax.random.key(0), plain, (28, 28, 1))
    x = jax.random.normal(jax.random.key(1), (2, 28, 28, 1))
    tangent = jax.tree.map(jnp.ones_like, params)

    def jvp(model):
        apply_fn = models.make_apply_fn(model, state)
        return jax.jit(
            lambda p, t: jax.jvp(lambda p: apply_fn(p, x), (p,), (t,))[1],
            compiler_options=_FAST,
        )(params, tangent)

    _assert_close_on_scale(jvp(fast), jvp(plain))
    optimizer = train.sgd(0.01, momentum=0.9)
    epoch = train.make_train_epoch(fast, optimizer, batch_size=4)
    train_state = train.init_train_state(
        params, masks.dense_mask(params), optimizer, state
    )
    images = jax.random.normal(jax.random.key(2), (8, 28, 28, 1))
    batches = {"image": images, "label": jnp.arange(8) % 10}
    for epoch_index in range(2):
        train_state, metrics = epoch(
            train_state, batches, jax.random.key(3), epoch_index
        )
    assert np.isfinite(metrics["loss"])
    assert epoch._cache_size() == 1


def test_vgg_accepts_fast_conv_grad():
    model = models.get_model("vgg11_bn", fast_conv_grad=True)
    shapes = jax.eval_shape(
        lambda k: models.init_params(k, model, (32, 32, 3)), jax.random.key(0)
    )
    assert models.count_params(shapes[0]) == 9_231_114


class _NoTrainArg(nn.Module):
    """A user classifier whose ``__call__`` takes no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(5)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3, name="head")(x)


class _TrainScales(nn.Module):
    """Logits double in train mode, to see whether ``train`` arrived."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        logits = nn.Dense(3, name="head")(x.reshape(x.shape[0], -1))
        return logits * (2.0 if train else 1.0)


def test_model_without_train_argument_works_with_make_apply_fn(key):
    model = _NoTrainArg()
    params, state = models.init_params(key, model, (4, 4, 1))
    assert state == {}
    x = _images(key, 2, (4, 4, 1))
    expected = model.apply({"params": params}, x)
    for training in (False, True):
        apply_fn = models.make_apply_fn(model, state, train=training)
        np.testing.assert_array_equal(apply_fn(params, x), expected)
        np.testing.assert_array_equal(jax.jit(apply_fn)(params, x), expected)
    grads = jax.grad(lambda p: models.make_apply_fn(model)(p, x).sum())(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_apply_model_passes_train_only_when_accepted(key):
    x = _images(key, 2, (4, 4, 1))
    scales = _TrainScales()
    variables = scales.init(key, x)
    infer = models.apply_model(scales, variables, x, train=False)
    np.testing.assert_array_equal(
        models.apply_model(scales, variables, x, train=True), 2.0 * infer
    )
    np.testing.assert_array_equal(infer, scales.apply(variables, x, train=False))
    sequential = nn.Sequential([lambda x: x.reshape(x.shape[0], -1), nn.Dense(3)])
    variables = sequential.init(key, x)
    logits, updates = models.apply_model(
        sequential, variables, x, train=True, mutable=["batch_stats"]
    )
    np.testing.assert_array_equal(logits, sequential.apply(variables, x))
    assert dict(updates) == {}


def _slice_sizes(model, variables, x, **kwargs):
    """Outputs of ``model`` and the batch sizes its inner module was called on."""
    sizes = []

    def record(next_fun, args, kwargs_, context):
        parent = context.module.parent
        if context.method_name == "__call__" and isinstance(parent, models.BatchParts):
            sizes.append(args[0].shape[0])
        return next_fun(*args, **kwargs_)

    with nn.intercept_methods(record):
        out = models.apply_model(model, variables, x, **kwargs)
    return out, sizes


@pytest.mark.parametrize(
    "inner",
    [
        models.LeNet5(batch_minor=True),
        models.LeNet5BN(batch_minor=True),
        models.LeNet300_100(),
        _NoTrainArg(),
        _TrainScales(),
    ],
    ids=lambda m: type(m).__name__ + ("_bn" if getattr(m, "batch_norm", 0) else ""),
)
def test_batch_parts_gives_the_modules_params_outputs_and_gradients(inner):
    wrapped = models.BatchParts(inner, parts=2)
    params, state = _init(jax.random.key(0), inner, (28, 28, 1))
    wrapped_params, wrapped_state = _init(jax.random.key(0), wrapped, (28, 28, 1))
    chex.assert_trees_all_equal((wrapped_params, wrapped_state), (params, state))
    x = jax.random.normal(jax.random.key(1), (5, 28, 28, 1))  # uneven: 2 + 3
    variables = {"params": params, **state}
    expected = models.apply_model(inner, variables, x, train=False)
    got, sizes = _slice_sizes(wrapped, variables, x, train=False)
    assert sizes == [2, 3]
    _assert_close_on_scale(got, expected)

    def grad(model):
        apply_fn = models.make_apply_fn(model, state, train=True)
        loss = lambda p: (apply_fn(p, x) ** 2).sum()  # noqa: E731
        return jax.jit(jax.grad(loss), compiler_options=_FAST)(params)

    expected_grads = grad(inner)
    if state:  # train-mode BatchNorm: the batch runs whole, so all is exact
        chex.assert_trees_all_equal(grad(wrapped), expected_grads)
        train_kwargs = {"train": True, "mutable": ["batch_stats"]}
        got, sizes = _slice_sizes(wrapped, variables, x, **train_kwargs)
        assert sizes == [5]
        expected = models.apply_model(inner, variables, x, **train_kwargs)
        chex.assert_trees_all_equal(got, expected)
    else:
        _assert_close_on_scale(grad(wrapped), expected_grads)


def test_batch_parts_passes_train_and_splits_at_most_per_example(key):
    scales = _TrainScales()
    wrapped = models.BatchParts(scales, parts=3)
    variables = scales.init(key, _images(key, 1, (4, 4, 1)))
    x = _images(key, 2, (4, 4, 1))
    for training, factor in ((False, 1.0), (True, 2.0)):
        got, sizes = _slice_sizes(wrapped, variables, x, train=training)
        assert sizes == [1, 1]
        np.testing.assert_allclose(got, factor * scales.apply(variables, x), 1e-6)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_batch_parts_rejects_bad_parts(key, bad):
    with pytest.raises(ValueError, match="BatchParts.parts must be a positive int"):
        models.init_params(key, models.BatchParts(_NoTrainArg(), parts=bad), (4, 4, 1))


def test_batch_parts_epoch_compiles_once_and_trains_like_the_module():
    optimizer = train.sgd(0.01, momentum=0.9)
    inner = models.LeNet5(batch_minor=True)
    params, state = _init(jax.random.key(0), inner, (28, 28, 1))
    images = jax.random.normal(jax.random.key(2), (8, 28, 28, 1))
    batches = {"image": images, "label": jnp.arange(8) % 10}
    finals = []
    for model in (inner, models.BatchParts(inner)):
        epoch = train.make_train_epoch(model, optimizer, batch_size=4)
        train_state = train.init_train_state(
            params, masks.dense_mask(params), optimizer, state
        )
        for epoch_index in range(2):
            train_state, _ = epoch(train_state, batches, jax.random.key(3), epoch_index)
        assert epoch._cache_size() == 1
        finals.append(train_state.params)
    _assert_close_on_scale(*finals, rel=1e-4)
