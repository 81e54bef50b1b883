import pytest
import torch

from model.config import ModelConfig, preset
from model.masking import checkerboard_keep, inference_keep, keep_to_mask, train_keep
from model.network import AEDMAE, count_parameters, patchify, unpatchify
from model.scoring import ONE_VIEW, Scorer, reconstruct, score_frames, scoring_views, token_errors


def _frames(cfg: ModelConfig, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_size
    return torch.randint(0, 256, (batch, 3, h, w, cfg.channels), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("with_student", [True, False])
@pytest.mark.parametrize("name", ["tiny", "quick"])
def test_counted_flops_are_what_pytorch_counts_plus_the_attention_products(name, with_student):
    """model.info counts each part by formula; PyTorch's FlopCounterMode counts the convolutions and
    linear layers of a real pass but not scaled_dot_product_attention on the CPU, whose two products
    (q k^T and attn v: 2 n^2 d multiply-adds a block, n tokens with the class token) are added here."""
    from torch.utils.flop_counter import FlopCounterMode

    from model.info import pass_macs

    cfg = preset(name)[0]
    rows, cols = cfg.grid
    tokens, kept = rows * cols, rows * cols // 2
    attention = cfg.depth * 2 * (kept + 1) ** 2 * cfg.embed_dim
    attention += (cfg.decoder_depth + with_student) * 2 * (tokens + 1) ** 2 * cfg.decoder_dim
    x = torch.zeros(1, 3 * cfg.channels, *cfg.image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        AEDMAE(cfg).eval()(x, torch.arange(0, tokens, 2)[None], with_student=with_student)
    assert counter.get_total_flops() // 2 + attention == sum(pass_macs(cfg, with_student).values())


def test_inference_passes_are_the_maskings_passes_on_every_view():
    from dataclasses import replace

    from model.info import inference_passes

    cfg = preset("tiny")[0]
    four = replace(cfg.scoring, grid_shifts=4)
    assert inference_passes(cfg) == 2 and inference_passes(replace(cfg, scoring=four)) == 8
    assert inference_passes(replace(cfg, inference_masking="fixed", scoring=four)) == 4
    both_ways = replace(four, time_reversal=True)
    assert inference_passes(replace(cfg, inference_masking="random", scoring=both_ways)) == 8


def test_reference_parameter_count():
    net = AEDMAE(ModelConfig())
    total = sum(p.numel() for p in net.parameters())
    # METHOD.md: 3,042,690 (encoder 2.20M, teacher 0.58M, student 0.27M own), within 1%.
    assert abs(total - 3_042_690) / 3_042_690 < 0.01
    assert round(count_parameters(net.encoder_modules()) / 1e6, 2) == 2.20
    assert round(count_parameters(net.teacher_modules()) / 1e6, 2) == 0.58
    assert round(count_parameters(net.student_modules()) / 1e6, 2) == 0.27
    parts = net.encoder_modules() + net.teacher_modules() + net.student_modules()
    assert count_parameters(parts) == total


def test_output_shapes(tiny):
    cfg = tiny[0]
    net = AEDMAE(cfg).eval()
    keep = train_keep(cfg, 2, torch.Generator().manual_seed(0))
    x = torch.rand(2, cfg.in_chans, *cfg.image_size) * 2 - 1
    teacher, student = net(x, keep)
    tokens = cfg.grid[0] * cfg.grid[1]
    assert teacher.shape == (2, tokens, cfg.patch_size**2 * cfg.out_chans)
    assert student is not None and student.shape == teacher.shape
    _, none = net(x, keep, with_student=False)
    assert none is None


def test_training_masks_are_either_checkerboard_drawn_per_sample(tiny):
    """Complementary training: each sample hides one of the two checkerboards, drawn per sample from
    the generator (so every token is learnt both kept and hidden), the same draws for the same seed;
    random training: any half of the tokens, sorted."""
    import dataclasses

    cfg = tiny[0]
    phases = [checkerboard_keep(cfg.grid, p) for p in (0, 1)]
    keep = train_keep(cfg, 64, torch.Generator().manual_seed(0))
    which = [next(p for p in (0, 1) if torch.equal(row, phases[p])) for row in keep]
    assert 16 <= sum(which) <= 48  # both phases, about half each (binomial(64, 0.5): 16-48 is 99.99%)
    assert torch.equal(train_keep(cfg, 64, torch.Generator().manual_seed(0)), keep)
    rnd = train_keep(dataclasses.replace(cfg, train_masking="random"), 8, torch.Generator().manual_seed(0))
    tokens = cfg.grid[0] * cfg.grid[1]
    assert rnd.shape == (8, tokens // 2) and all(torch.equal(r, r.sort().values) and len(set(r.tolist())) == len(r)
                                                 for r in rnd)
    assert not any(torch.equal(r, phases[0]) or torch.equal(r, phases[1]) for r in rnd)


def test_patchify_roundtrip():
    images = torch.randn(2, 4, 16, 24)
    tokens = patchify(images, 8)
    assert tokens.shape == (2, 6, 8 * 8 * 4)
    assert torch.equal(unpatchify(tokens, 8, (2, 3)), images)
    # token 1 is the patch at row 0, column 1
    assert torch.equal(tokens[0, 1].view(8, 8, 4).permute(2, 0, 1), images[0, :, :8, 8:16])


def test_mask_polarity_and_complementary_tiling():
    grid = (4, 6)
    keep0, keep1 = checkerboard_keep(grid, 0), checkerboard_keep(grid, 1)
    masks = keep_to_mask(torch.stack([keep0, keep1]), 24)
    # 0 is keep, 1 is remove; each pass keeps half; together they keep every token exactly once
    assert masks.sum(1).tolist() == [12, 12]
    assert torch.equal(masks[0] + masks[1], torch.ones(24))
    assert masks[0, keep0].sum() == 0 and masks[0, 0] == 0 and masks[0, 1] == 1
    # every row keeps half of its tokens, so kept tokens form an (H, W/2) grid
    assert masks[0].view(4, 6).sum(1).tolist() == [3, 3, 3, 3]


def test_inference_plans(tiny):
    import dataclasses

    cfg = tiny[0]
    assert inference_keep(cfg).shape[0] == 2
    fixed = dataclasses.replace(cfg, inference_masking="fixed")
    assert torch.equal(inference_keep(fixed), inference_keep(fixed))
    rnd = dataclasses.replace(cfg, inference_masking="random")
    a = inference_keep(rnd, torch.Generator().manual_seed(1))
    b = inference_keep(rnd, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)
    assert torch.equal(a.sort(dim=1).values, a)  # kept-token order is fixed (sorted)


def test_complementary_takes_each_token_from_the_pass_that_hid_it(tiny):
    cfg = tiny[0]
    tokens = cfg.grid[0] * cfg.grid[1]

    class PassIndexModel(torch.nn.Module):
        """Predicts, for every token, whether it was kept (1) or removed (0) in this pass."""

        cfg = tiny[0]

        def forward(self, x, keep, with_student=True):
            kept = 1 - keep_to_mask(keep, tokens)
            out = kept.unsqueeze(-1).expand(-1, -1, 4)
            return out, out + 1

    frames = _frames(cfg, 3)
    teacher, student = reconstruct(PassIndexModel(), frames, inference_keep(cfg))  # type: ignore[arg-type]
    assert teacher.shape == (3, tokens, 4)
    assert torch.all(teacher == 0), "every token must come from a pass in which it was removed"
    assert torch.all(student == 1)


def test_inference_is_bit_identical(tiny):
    cfg = tiny[0]
    torch.manual_seed(0)
    net = AEDMAE(cfg).eval()
    frames = _frames(cfg, 4)
    with torch.no_grad():
        a = score_frames(net, frames)
        b = score_frames(net, frames)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)  # bit-identical
    assert a.heatmap.shape == (4, *cfg.grid)
    assert torch.allclose(a.score, a.teacher_error + a.discrepancy)
    assert torch.allclose(a.heatmap.mean(dim=(1, 2)), a.score, rtol=1e-5)


def test_grid_shifts_average_the_scores_of_the_moved_frames(tiny):
    import dataclasses

    from model.config import ScoringConfig
    from model.dataset import shift_image
    from model.errors import ConfigError

    cfg = tiny[0]
    torch.manual_seed(0)
    net = AEDMAE(cfg).eval()
    frames = _frames(cfg, 3)
    half = cfg.patch_size // 2
    with torch.no_grad():
        four_grids = dataclasses.replace(cfg.scoring, grid_shifts=4)
        te, dis = token_errors(net, frames, views=scoring_views(cfg, four_grids))
        assert te.shape == dis.shape == (3, 4, cfg.grid[0] * cfg.grid[1])
        for k, (dy, dx) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):
            one_te, one_dis = token_errors(net, shift_image(frames, dy, dx, axes=(2, 3)), views=ONE_VIEW)
            torch.testing.assert_close(te[:, k], one_te[:, 0], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(dis[:, k], one_dis[:, 0], rtol=1e-4, atol=1e-6)
    # per-grid token statistics, each grid scored as a one-grid scorer would, the scores averaged
    means = te.mean(0) + 0.1, dis.mean(0) + 0.1  # (4, L), different per grid
    four = ScoringConfig(reduction="topk", token_normalization=True, grid_shifts=4)
    got = Scorer(cfg.grid, four, None, *means)(te, dis)
    one = dataclasses.replace(four, grid_shifts=1)
    per_grid = [Scorer(cfg.grid, one, None, means[0][k], means[1][k])(te[:, k], dis[:, k]) for k in range(4)]
    for name in ("score", "teacher_error", "discrepancy", "heatmap"):
        torch.testing.assert_close(getattr(got, name), torch.stack([getattr(s, name) for s in per_grid]).mean(0))
    with pytest.raises(ConfigError, match="refit"):
        Scorer(cfg.grid, four, None, means[0][0], means[1][0])  # one grid's statistics for four grids
    with pytest.raises(ConfigError, match="view"):
        Scorer(cfg.grid, four)(te[:, :2], dis[:, :2])
    # contrast: each grid's score divided by its median heatmap token (torch's lower median)
    ratio = Scorer(cfg.grid, dataclasses.replace(four, contrast="ratio"), None, *means)(te, dis)
    tokens = te / means[0] + dis / means[1]
    want = torch.stack([tokens[:, k].topk(Scorer(cfg.grid, one).topk, dim=1).values.mean(1)
                        / tokens[:, k].median(dim=1).values for k in range(4)]).mean(0)
    torch.testing.assert_close(ratio.score, want)
    torch.testing.assert_close(ratio.teacher_error, got.teacher_error)  # components stay uncontrasted
    with pytest.raises(ConfigError, match="contrast must be"):
        dataclasses.replace(cfg, scoring=ScoringConfig(contrast="median")).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="grid_shifts must be 1, 2 or 4"):
        dataclasses.replace(cfg, scoring=ScoringConfig(grid_shifts=3)).validate()


def test_time_reversal_scores_each_grid_on_the_reversed_window_too(tiny):
    """With time_reversal the views are each grid forward, then each grid on (t+3, t, t-3); the
    reversed views are exactly the forward scoring of the reversed windows, and the scorer averages
    all views with per-view statistics."""
    import dataclasses

    from model.config import ScoringConfig
    from model.errors import ConfigError

    cfg = tiny[0]
    torch.manual_seed(0)
    net = AEDMAE(cfg).eval()
    frames = _frames(cfg, 3)
    two = ScoringConfig(reduction="topk", token_normalization=True, grid_shifts=2)
    both = dataclasses.replace(two, time_reversal=True)
    views = scoring_views(cfg, both)
    half = cfg.patch_size // 2
    assert views == [(0, 0, False), (half, half, False), (0, 0, True), (half, half, True)] and both.views == 4
    assert both.one_view() == dataclasses.replace(two, grid_shifts=1)
    assert scoring_views(cfg, both.one_view()) == ONE_VIEW
    with torch.no_grad():
        te, dis = token_errors(net, frames, views=views)
        fwd = token_errors(net, frames, views=scoring_views(cfg, two))
        rev = token_errors(net, frames.flip(1), views=scoring_views(cfg, two))
    assert te.shape == (3, 4, cfg.grid[0] * cfg.grid[1])
    torch.testing.assert_close(te, torch.cat([fwd[0], rev[0]], 1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dis, torch.cat([fwd[1], rev[1]], 1), rtol=1e-4, atol=1e-6)
    assert not torch.allclose(te[:, 0], te[:, 2])  # the reversed window is a different input
    means = te.mean(0) + 0.1, dis.mean(0) + 0.1  # (4, L)
    got = Scorer(cfg.grid, both, None, *means)(te, dis)
    per_dir = [Scorer(cfg.grid, two, None, means[0][k:k + 2], means[1][k:k + 2])(te[:, k:k + 2], dis[:, k:k + 2])
               for k in (0, 2)]
    torch.testing.assert_close(got.score, (per_dir[0].score + per_dir[1].score) / 2)
    with pytest.raises(ConfigError, match="refit"):
        Scorer(cfg.grid, both, None, means[0][:2], means[1][:2])  # forward statistics only
    with torch.no_grad():  # score_frames follows the scorer's views
        direct = score_frames(net, frames, Scorer(cfg.grid, both, None, *means))
    torch.testing.assert_close(direct.score, got.score, rtol=1e-4, atol=1e-6)


def test_random_masking_is_not_deterministic(tiny):
    import dataclasses

    cfg = dataclasses.replace(tiny[0], inference_masking="random")
    torch.manual_seed(0)
    net = AEDMAE(cfg).eval()
    frames = _frames(cfg, 2)
    with torch.no_grad():
        a = score_frames(net, frames, keep=inference_keep(cfg, torch.Generator().manual_seed(1)))
        b = score_frames(net, frames, keep=inference_keep(cfg, torch.Generator().manual_seed(2)))
    assert not torch.equal(a.score, b.score)


def test_config_validation():
    from model.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of"):
        ModelConfig(image_size=(30, 48), patch_size=8).validate()
    with pytest.raises(ConfigError, match="even number of columns"):
        ModelConfig(image_size=(32, 40), patch_size=8).validate()
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")


def test_scorer_by_hand_weights_the_discrepancy_and_averages_the_top_tokens():
    """Ten tokens (a 2x5 grid), one frame: teacher errors 0..9, discrepancy 0.5 everywhere but 2.0 on
    token 0. With weight 4 the tokens are 0 + 8 = 8, then 1 + 2 = 3, ..., 9 + 2 = 11; the top 20% (two
    tokens) are 11 and 10, score 10.5; each component is reduced alone (teacher 9 and 8 -> 8.5,
    discrepancy 2.0 and 0.5 -> 1.25); the heatmap is the tokens. 1% of ten tokens is still one token."""
    from model.config import ScoringConfig

    te = torch.arange(10, dtype=torch.float32)[None]
    dis = torch.full((1, 10), 0.5)
    dis[0, 0] = 2.0
    cfg = ScoringConfig(reduction="topk", topk_fraction=0.2, discrepancy_weight=4.0)
    got = Scorer((2, 5), cfg)(te, dis)
    tokens = te + 4 * dis
    assert got.score.tolist() == [10.5] and got.teacher_error.tolist() == [8.5]
    assert got.discrepancy.tolist() == [1.25] and torch.isnan(got.calibrated).all()
    torch.testing.assert_close(got.heatmap, tokens.view(1, 2, 5))
    one = Scorer((2, 5), ScoringConfig(reduction="topk", topk_fraction=0.01, discrepancy_weight=4.0))
    assert one.topk == 1 and one(te, dis).score.tolist() == [11.0]
    mean = Scorer((2, 5), ScoringConfig(discrepancy_weight=4.0))(te, dis)  # the paper's mean over tokens
    assert mean.score.tolist() == pytest.approx([float(tokens.mean())])


def test_pooled_token_means_are_each_tokens_neighbourhood_maximum():
    from model.scoring import pool_token_means

    means = torch.zeros(2, 4 * 5)
    means[0, 1 * 5 + 2] = 3.0  # a busy token inside the grid
    means[1, 0] = 2.0  # one in the corner of the second view
    assert torch.equal(pool_token_means(means, (4, 5), 0), means)
    got = pool_token_means(means, (4, 5), 1).reshape(2, 4, 5)
    want = torch.zeros(2, 4, 5)
    want[0, 0:3, 1:4] = 3.0  # its 3x3 neighbourhood, on its own view only
    want[1, 0:2, 0:2] = 2.0
    assert torch.equal(got, want)
    assert torch.equal(pool_token_means(means, (4, 5), 3)[0], torch.full((20,), 3.0))


def test_fitted_statistics_are_pooled_when_the_scoring_asks(tiny, monkeypatch):
    """model.scoring.token_stat_pool: the stored (and used) normal means are the raw ones max-pooled over
    each view's token grid, what a camera moved by half a token shows a quiet token."""
    import dataclasses

    import numpy as np

    from model import evaluation
    from model.errors import ConfigError
    from tests.conftest import scene_frames

    monkeypatch.setattr(evaluation, "TOKEN_STAT_FLOOR", 0.0)  # compare the means themselves
    scoring = dataclasses.replace(tiny[0].scoring, token_normalization=True, grid_shifts=2)
    cfg = dataclasses.replace(tiny[0], scoring=scoring)
    net = AEDMAE(cfg).eval()
    h, w = cfg.image_size
    clips = [("v", scene_frames(10, h, w, channels=cfg.channels))]
    _, raw_meta = evaluation.fit_scorer(net, clips)
    pooled, meta = evaluation.fit_scorer(net, clips, dataclasses.replace(cfg.scoring, token_stat_pool=1))
    rows, cols = cfg.grid
    for key, mine in (("teacher_error", pooled.token_means()[0]), ("discrepancy", pooled.token_means()[1])):
        grids = np.asarray(raw_meta["token_stats"][key]).reshape(2, rows, cols)
        want = np.array([[[g[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].max() for j in range(cols)]
                          for i in range(rows)] for g in grids])
        np.testing.assert_allclose(np.asarray(meta["token_stats"][key]).reshape(2, rows, cols), want, rtol=1e-6)
        np.testing.assert_allclose(mine.numpy().reshape(2, rows, cols), want, rtol=1e-6)
        assert (want > grids).any()  # pooling changed something: the test can tell the two apart
    with pytest.raises(ConfigError, match="token_stat_pool"):
        dataclasses.replace(cfg, scoring=dataclasses.replace(cfg.scoring, token_stat_pool=4)).validate()
