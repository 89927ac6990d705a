"""Tests of the FIFN network (occo_ros.model.network) and its checkpoints
(occo_ros.model.checkpoint)."""

from copy import deepcopy
from pathlib import Path
import shutil

from conftest import assert_tensors_close
import pytest
import torch

from occo_ros.model import checkpoint
from occo_ros.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from occo_ros.model.network import (
    FIFB,
    FIFN,
    InferenceFIFN,
    attention_context,
    build_fifn,
    channel_layer_norm,
    count_parameters,
    fifn_half,
    fifn_occo,
    fifn_quarter,
    pad_to_match,
    scaled_widths,
)

pytestmark = [pytest.mark.core]


@pytest.fixture(scope='module')
def quarter() -> FIFN:
    torch.manual_seed(0)
    return fifn_quarter().eval()


def pair(batch: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(batch, 1, height, width), torch.rand(batch, 1, height, width)


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('size', [(8, 8), (9, 13), (31, 47), (15, 8), (256, 320),
                                  pytest.param((480, 640), marks=pytest.mark.slow)])
def test_output_shape_and_finite(quarter, batch, size):
    with torch.inference_mode():
        out = quarter(*pair(batch, *size))
    assert out.shape == (batch, 1, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_eval_output_does_not_depend_on_batch(quarter):
    visible, infrared = pair(2, 21, 34)
    with torch.inference_mode():
        both = quarter(visible, infrared)
        first = quarter(visible[:1], infrared[:1])
    assert_tensors_close(both[:1], first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size', [(7, 8), (8, 7), (3, 100)])
def test_too_small_input_names_size(quarter, size):
    with pytest.raises(ValueError, match=f'{size[0]}x{size[1]}'):
        quarter(*pair(1, *size))


def test_mismatched_or_multichannel_inputs_raise(quarter):
    with pytest.raises(ValueError, match='one shape'):
        quarter(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17))
    with pytest.raises(ValueError, match='one shape'):
        quarter(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_parameter_count_at_width_1():
    assert count_parameters(fifn_occo()) == 3_577_157


@pytest.mark.parametrize('width, channels, heads', [
    (1.0, (32, 64, 112, 160), (4, 4, 4, 1)),
    (0.5, (16, 32, 56, 80), (2, 4, 4, 1)),
    (0.25, (8, 16, 32, 40), (1, 2, 4, 1)),
    (0.1, (8, 8, 8, 16), (1, 1, 1, 1)),
    (0.75, (24, 48, 88, 120), (3, 4, 4, 1)),  # 112 * 0.75 / 8 = 10.5 rounds half up to 11
])
def test_width_rule(width, channels, heads):
    assert scaled_widths(width) == (channels, heads)
    model = build_fifn(width)
    assert (model.channels, model.heads) == (channels, heads)
    assert model.fusion[0].merge.norm.num_features == channels[0]
    assert model.fusion[3].cross_attention.visible.heads == heads[3]


def test_named_factories():
    assert fifn_half().width == 0.5
    assert fifn_quarter().channels == (8, 16, 32, 40)
    assert fifn_occo().model_args == {
        'width': 1.0, 'base_widths': [32, 64, 112, 160], 'base_heads': [4, 4, 4, 1]}


@pytest.mark.parametrize('width', [0, -0.5, float('nan'), float('inf'), '1'])
def test_invalid_width_raises(width):
    with pytest.raises(ValueError, match='width'):
        scaled_widths(width)


def test_mismatched_base_tuples_raise():
    with pytest.raises(ValueError, match='same length'):
        FIFN(base_widths=(32, 64), base_heads=(4,))


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(1)
    model = fifn_quarter().train()
    out = model(*pair(2, 19, 24))
    assert not torch.isnan(out).any()
    out.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f'{name} got no gradient (unused layer?)'
        assert torch.isfinite(parameter.grad).all(), f'{name} has a non-finite gradient'
        assert parameter.grad.abs().sum() > 0, f'{name} has an all-zero gradient'


def fifb_on_tokens(block: FIFB, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
    """FIFB written as OCCO_METHOD.md §2 states it, on tokens (B, N, C): the reference."""
    batch, channels, height, width = visible.shape

    def tokens(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)                              # (B, N, C)

    def heads(x: torch.Tensor, count: int) -> torch.Tensor:
        return x.reshape(batch, -1, count, channels // count).transpose(1, 2)  # (B, h, N, d)

    w_v, w_i = block.channel_weights(visible, infrared)
    attention = block.cross_attention
    projected = {}
    for name, branch, gated in (('v', attention.visible, w_v * visible),
                                ('i', attention.infrared, w_i * infrared)):
        queries = torch.relu(torch.nn.functional.linear(
            tokens(gated), branch.context.weight, branch.context.bias))
        keys, values = torch.nn.functional.linear(queries, branch.key_value.weight).chunk(2, -1)
        keys, values = heads(keys, branch.heads), heads(values, branch.heads)
        depth = channels // branch.heads
        context = torch.softmax(keys.transpose(-2, -1) @ values / depth ** 0.5, dim=-2)
        projected[name] = (heads(queries, branch.heads), context)
    merged = []
    for name, other, branch, original in (('v', 'i', attention.visible, visible),
                                          ('i', 'v', attention.infrared, infrared)):
        attended = (projected[name][0] @ projected[other][1]).transpose(1, 2)
        attended = attended.reshape(batch, -1, channels)
        enhanced = tokens(block.spatial_gate(original))
        y = branch.output(torch.cat([enhanced, attended], dim=-1))
        out = branch.norm(tokens(original) + y)                          # (B, N, C)
        merged.append(out.transpose(1, 2).reshape(batch, channels, height, width))
    return block.merge(torch.cat(merged, dim=1))


@pytest.mark.parametrize('channels, heads', [(8, 1), (32, 4)])
def test_channel_first_fifb_equals_the_token_form_of_the_paper(channels, heads):
    torch.manual_seed(3)
    block = FIFB(channels, heads).eval()
    for parameter in block.parameters():  # non-trivial LayerNorm affine and biases
        torch.nn.init.normal_(parameter, std=0.3)
    visible, infrared = torch.randn(2, channels, 11, 14), torch.randn(2, channels, 11, 14)
    with torch.no_grad():
        assert_tensors_close(block(visible, infrared),
                             fifb_on_tokens(block, visible, infrared),
                             atol=1e-5, rtol=1e-5)


def test_channel_layer_norm_equals_layer_norm_per_pixel_also_under_autocast():
    torch.manual_seed(4)
    norm = torch.nn.LayerNorm(8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 8, 5, 6) * 3 + 1
    expected = norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert_tensors_close(channel_layer_norm(x, norm), expected)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = channel_layer_norm(x.bfloat16(), norm)
    assert low.dtype == torch.bfloat16   # computed in float32, handed back in bf16
    assert_tensors_close(low.float(), channel_layer_norm(x.bfloat16().float(), norm),
                         atol=0.02, rtol=0.01)


def test_attention_context_normalises_columns_over_key_channels():
    keys, values = torch.randn(2, 3, 8, 50), torch.randn(2, 3, 8, 50)   # (B, h, d, N)
    ctx = attention_context(keys, values)
    assert ctx.shape == (2, 3, 8, 8)
    assert_tensors_close(ctx.sum(dim=-2), torch.ones(2, 3, 8))
    logits = keys[0, 1] @ values[0, 1].T / 8 ** 0.5
    assert_tensors_close(ctx[0, 1], torch.softmax(logits, dim=0))


def test_attention_context_stays_float32_under_autocast():
    torch.manual_seed(5)
    # Unit-scale inputs: 4096 tokens already give logits of ~16; much larger ones saturate
    # the softmax, where bf16 rounding of the inputs alone can flip it (seen at scale 4).
    keys, values = torch.randn(1, 2, 16, 4096), torch.randn(1, 2, 16, 4096)
    reference = attention_context(keys, values)
    keys16, values16 = keys.bfloat16(), values.bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        # Autocast alone would run this matmul in bfloat16.
        assert (keys16 @ values16.transpose(-2, -1)).dtype == torch.bfloat16
        ctx = attention_context(keys16, values16)
    assert ctx.dtype == torch.float32
    # Same result as float32 on the bf16-rounded inputs: no bf16 arithmetic inside.
    assert_tensors_close(ctx, attention_context(keys16.float(), values16.float()))
    assert (ctx - reference).abs().max() < 0.05


def test_model_runs_under_autocast_close_to_fp32(quarter):
    visible, infrared = pair(1, 40, 56)
    with torch.inference_mode():
        full = quarter(visible, infrared)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = quarter(visible, infrared)
    assert torch.isfinite(low).all()
    assert (low.float() - full).abs().max() < 0.1


def test_half_model_keeps_context_in_float32(quarter, monkeypatch):
    seen = []
    import occo_ros.model.network as model_module

    def spy(keys, values):
        ctx = attention_context(keys, values)
        seen.append((keys.dtype, ctx.dtype))
        return ctx

    monkeypatch.setattr(model_module, 'attention_context', spy)
    half = fifn_quarter().eval().to(torch.bfloat16)
    with torch.inference_mode():
        half(*(x.bfloat16() for x in pair(1, 16, 16)))
    assert seen and all(dtypes == (torch.bfloat16, torch.float32) for dtypes in seen)


def test_inference_fifn_clamps_raw_output():
    torch.manual_seed(2)
    fifn = fifn_quarter().eval()
    visible, infrared = pair(1, 24, 24)
    with torch.no_grad():
        # Spread the raw output around 0.5, well beyond [0, 1] on both sides.
        fifn.head.weight.mul_(50.0)
        fifn.head.bias.add_(0.5 - fifn(visible, infrared).median())
    with torch.inference_mode():
        raw = fifn(visible, infrared)
        clamped = InferenceFIFN(fifn)(visible, infrared)
    assert raw.min() < 0 and raw.max() > 1
    assert clamped.min() >= 0 and clamped.max() <= 1
    assert_tensors_close(clamped, raw.clamp(0, 1))


def test_pad_to_match_reflects_with_floor_half_on_top_left():
    x = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    assert pad_to_match(x, 4, 6) is x
    odd = pad_to_match(x, 5, 7)  # the case FIFN meets: one extra row and column
    assert_tensors_close(odd[..., :4, :6], x)
    assert_tensors_close(odd[..., 4, :6], x[..., 2, :])  # reflect, not replicate
    assert_tensors_close(odd[..., :4, 6], x[..., :, 4])
    wide = pad_to_match(x, 4, 9)  # 3 columns: floor(3 / 2) = 1 left, 2 right
    assert_tensors_close(wide[..., 1:7], x)
    assert_tensors_close(wide[..., 0], x[..., 1])


# Checkpoints (occo_ros.model.checkpoint): kept beside the model tests they round-trip.

@pytest.fixture(scope='module')
def saved_once(tmp_path_factory) -> tuple[Path, FIFN]:
    """The module's one saved checkpoint and its model (building and saving them is most of
    a checkpoint test)."""
    torch.manual_seed(3)
    model = fifn_quarter()
    model.train()
    with torch.no_grad():  # move BatchNorm running statistics away from their defaults
        model(*pair(2, 16, 16))
    path = save_checkpoint(tmp_path_factory.mktemp('checkpoint') / 'sub' / 'fifn.pt', model,
                           input_normalization=NORM, training={'epoch': 3, 'lr': 1e-4},
                           extractor='vgg19')
    return path, model


@pytest.fixture()
def saved(saved_once, tmp_path) -> tuple[Path, FIFN]:
    """A copy of that checkpoint and model, for one test to change."""
    path, model = saved_once
    copy = tmp_path / 'sub' / path.name
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    return copy, deepcopy(model)


NORM = {'visible': 'uint8 / 255, BT.601 Y', 'infrared': 'uint8 / 255'}


def test_checkpoint_round_trip_is_exact(saved):
    path, model = saved
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert meta['format'] == 'occo_ros.fifn' and meta['format_version'] == 1
    assert meta['model_args'] == model.model_args
    assert meta['architecture']['channels'] == [8, 16, 32, 40]
    assert meta['input_normalization'] == NORM
    assert meta['training'] == {'epoch': 3, 'lr': 1e-4} and meta['extractor'] == 'vgg19'
    assert 'state_dict' not in meta
    fresh = fifn_quarter()
    fresh.load_state_dict(torch.load(path, weights_only=True)['state_dict'], strict=True)
    model.eval()
    visible, infrared = pair(1, 23, 30)
    with torch.inference_mode():
        assert torch.equal(loaded(visible, infrared), model(visible, infrared))
    assert read_checkpoint_meta(path) == meta


def test_checkpoint_leaves_no_temporary_files(saved_once):
    path, _ = saved_once
    assert [p.name for p in path.parent.iterdir()] == ['fifn.pt']


@pytest.mark.slow
@pytest.mark.parametrize('wrap', [
    torch.nn.DataParallel, torch.compile, InferenceFIFN,
    lambda m: torch.compile(InferenceFIFN(m))])
def test_save_unwraps_model(tmp_path, wrap):
    model = fifn_quarter()
    path = save_checkpoint(tmp_path / 'w.pt', wrap(model))
    state = torch.load(path, weights_only=True)['state_dict']
    assert state.keys() == model.state_dict().keys()


def test_save_rejects_non_fifn_and_bad_meta(tmp_path):
    with pytest.raises(TypeError, match='FIFN'):
        save_checkpoint(tmp_path / 'x.pt', torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"'training'\['data'\] is a PosixPath"):
        save_checkpoint(tmp_path / 'x.pt', fifn_quarter(), training={'data': tmp_path})
    with pytest.raises(ValueError, match='reserved'):
        save_checkpoint(tmp_path / 'x.pt', fifn_quarter(), state_dict={})
    assert not list(tmp_path.iterdir())


def test_failed_save_keeps_previous_file(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def broken_save(obj, stream):
        stream.write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(checkpoint.torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint(path, fifn_quarter())
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ['fifn.pt']


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(CheckpointError, match='not found.*nope.pt'):
        load_checkpoint(tmp_path / 'nope.pt')
    with pytest.raises(CheckpointError, match='not a file'):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize('damage', ['random', 'truncated', 'text'])
def test_corrupt_checkpoint_names_path_and_expectation(saved, damage):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes({'random': bytes(range(256)) * 8, 'truncated': data[:len(data) // 2],
                      'text': b'width: 0.25\n'}[damage])
    with pytest.raises(CheckpointError, match='cannot read checkpoint') as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and 'save_checkpoint' in str(error.value)
    with pytest.raises(CheckpointError, match=str(path)):
        read_checkpoint_meta(path)


class Payload:
    """An arbitrary object whose unpickling would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), 'w')


def test_pickled_objects_are_refused(tmp_path):
    marker, path = tmp_path / 'pwned', tmp_path / 'evil.pt'
    torch.save({'format': 'occo_ros.fifn', 'payload': Payload(marker)}, path)
    with pytest.raises(CheckpointError, match='weights_only'):
        load_checkpoint(path)
    assert not marker.exists()


def edited(saved, **changes) -> Path:
    """Rewrite the saved checkpoint with keys changed (None removes a key)."""
    path, _ = saved
    content = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del content[key]
        else:
            content[key] = value(content[key]) if callable(value) else value
    torch.save(content, path)
    return path


def test_wrong_format_key(saved):
    with pytest.raises(CheckpointError, match="'other'.*expected 'occo_ros.fifn'"):
        load_checkpoint(edited(saved, format='other'))


def test_newer_format_version(saved):
    with pytest.raises(CheckpointError, match='format_version 2'):
        load_checkpoint(edited(saved, format_version=2))


def test_not_a_dict(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match='expected a dict'):
        load_checkpoint(tmp_path / 'list.pt')


def test_missing_keys(saved):
    with pytest.raises(CheckpointError, match=r"missing keys \['state_dict'\]"):
        load_checkpoint(edited(saved, state_dict=None))


def test_state_dict_key_mismatch_names_keys(saved):
    def rename(state):
        state['extra.weight'] = state.pop('head.weight')
        return state

    with pytest.raises(CheckpointError, match=r"missing keys \['head.weight'\].*'extra.weight'"):
        load_checkpoint(edited(saved, state_dict=rename))


def test_state_dict_shape_mismatch(saved):
    path = edited(saved, architecture=None, model_args={
        'width': 0.5, 'base_widths': [32, 64, 112, 160], 'base_heads': [4, 4, 4, 1]})
    with pytest.raises(CheckpointError, match='size mismatch'):
        load_checkpoint(path)


def test_architecture_disagreeing_with_width_rule(saved):
    path = edited(saved, architecture={'channels': [8, 16, 24, 40], 'heads': [1, 2, 4, 1]})
    with pytest.raises(CheckpointError, match='width rule'):
        load_checkpoint(path)


def test_invalid_model_args(saved):
    with pytest.raises(CheckpointError, match='invalid model_args'):
        load_checkpoint(edited(saved, model_args={'width': -1.0}))


def test_non_finite_weights(saved):
    def poison(state):
        state['head.bias'] = torch.tensor([float('nan')])
        return state

    with pytest.raises(CheckpointError, match='head.bias'):
        load_checkpoint(edited(saved, state_dict=poison))


def test_the_tensor_comparison_refuses_differences():
    """assert_tensors_close (conftest) checks what torch.testing.assert_close checks."""
    x = torch.ones(2, 3)
    assert_tensors_close(x, x + 1e-6)
    for other in (x + 1e-4, x[:1], x.double(), x.bfloat16()):
        with pytest.raises(AssertionError):
            assert_tensors_close(x, other)
    assert_tensors_close(x, x + 1e-3, atol=2e-3)
    with pytest.raises(AssertionError, match='relu'):
        assert_tensors_close(x, x * 2, msg='relu')
