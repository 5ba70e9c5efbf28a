"""Tiling (src/tiling.py): exact mode == the official forward_chop, fast mode, batching, counts."""
import numpy as np
import pytest

from src.tiling import (DEFAULT_OVERLAP, PATCH, Tiler, count_tiles, official_tile_count,
                        tiled_forward)

SIZES = [(48, 48), (100, 124), (101, 127), (49, 97), (30, 40), (200, 50)]
SCALES = [1, 2, 3, 4]


def _img(h, w, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (3, h, w)).astype(np.float32)


def _up(a, s, axes=(-2, -1)):
    return np.repeat(np.repeat(a, s, axes[0]), s, axes[1])


def nearest(s):
    """Translation-equivariant dummy network: nearest-neighbour upsampling."""
    return lambda x: _up(x, s)


def tile_local(s):
    """Position-dependent dummy: the output depends on the tile's content *and* on the
    tile-local output coordinates, so every tile disagrees with its neighbours and any
    mistake in which tile wins where (or in the averaging) shows.  Depends only on the tile
    content, so duplicate tiles give identical outputs (dedup is legal)."""
    T = PATCH * s
    u = np.arange(T, dtype=np.float32)
    ramp = (0.37 * u[:, None] + 0.011 * u[None, :] ** 1.5
            + 3.1 * np.sin(u[:, None] * u[None, :] / 97.0)).astype(np.float32)

    def fn(x):
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        return (_up(x, s) * np.float32(0.9) + ramp + mean * np.float32(0.13)).astype(np.float32)
    return fn


# ------------------------------------------------------------------ naive official forward_chop
def _fold_sum(tiles, origins, shape):
    """torch F.fold (col2im) of tiles at the given origins: a sum.  col2im loops over kernel
    offsets ascending, then tile positions, so a pixel's contributions are added in order of
    ascending kernel offset = descending tile index.  Iterating the tiles in reverse gives the
    same per-pixel float32 order (checked against a literal col2im loop below)."""
    canvas = np.zeros(shape, np.float32)
    for t, (y, x) in reversed(list(zip(tiles, origins))):
        canvas[:, y:y + t.shape[1], x:x + t.shape[2]] += t
    return canvas


def naive_forward_chop(x, net, s):
    """ARCHITECTURE.md 3.3, literally: one tile per network call, no dedup, every canvas built."""
    P, S, T, m = 48, 12, 48 * s, 12 * s
    _, h, w = x.shape
    h_cut, w_cut = (h - P) % S, (w - P) % S
    H0, W0 = h - h_cut, w - w_cut
    nh, nw = (H0 - P) // S + 1, (W0 - P) // S + 1
    run = lambda t: net(np.ascontiguousarray(t)[None])[0]

    def row_strip(xs):  # xs: (3, 48, w) -> (3, 48s, W0 s)
        tiles = [run(xs[:, :, S * j:S * j + P]) for j in range(nw)]
        canvas = _fold_sum(tiles, [(0, S * s * j) for j in range(nw)], (3, T, W0 * s))
        inter = _fold_sum([t[:, :, m:T - m] for t in tiles], [(0, S * s * j) for j in range(nw)],
                          (3, T, (W0 - 24) * s))
        div = _fold_sum([np.ones((1, T, T - 2 * m), np.float32)] * nw,
                        [(0, S * s * j) for j in range(nw)], (1, T, (W0 - 24) * s))
        canvas[:, :, m:W0 * s - m] = inter / div
        return canvas

    def col_strip(xs):  # xs: (3, h, 48) -> (3, H0 s, 48s)
        tiles = [run(xs[:, S * i:S * i + P, :]) for i in range(nh)]
        canvas = _fold_sum(tiles, [(S * s * i, 0) for i in range(nh)], (3, H0 * s, T))
        inter = _fold_sum([t[:, m:T - m, :] for t in tiles], [(S * s * i, 0) for i in range(nh)],
                          (3, (H0 - 24) * s, T))
        div = _fold_sum([np.ones((1, T - 2 * m, T), np.float32)] * nh,
                        [(S * s * i, 0) for i in range(nh)], (1, (H0 - 24) * s, T))
        canvas[:, m:H0 * s - m, :] = inter / div
        return canvas

    y_corner = run(x[:, h - P:, w - P:])            # 1. corner
    y_bottom = row_strip(x[:, h - P:, :])           # 2. bottom strip
    y_right = col_strip(x[:, :, w - P:])            # 3. right strip
    y_top = row_strip(x[:, :P, :])                  # 4. top strip
    y_left = col_strip(x[:, :, :P])                 # 5. left strip
    origins = [(S * i, S * j) for i in range(nh) for j in range(nw)]
    tiles = [run(x[:, a:a + P, b:b + P]) for a, b in origins]   # 6. grid, row-major
    so = [(a * s, b * s) for a, b in origins]
    y = _fold_sum(tiles, so, (3, H0 * s, W0 * s))   # plain placement
    y[:, :T, :] = y_top
    y[:, :, :T] = y_left
    inter = _fold_sum([t[:, m:T - m, m:T - m] for t in tiles], so, (3, (H0 - 24) * s, (W0 - 24) * s))
    div = _fold_sum([np.ones((1, T - 2 * m, T - 2 * m), np.float32)] * len(tiles), so,
                    (1, (H0 - 24) * s, (W0 - 24) * s))
    y[:, m:H0 * s - m, m:W0 * s - m] = inter / div
    a, a2 = int((P - h_cut) / 2 * s), int((P - h_cut) / 2 * s + 0.5)
    b, b2 = int((P - w_cut) / 2 * s), int((P - w_cut) / 2 * s + 0.5)
    left = np.concatenate([y[:, :H0 * s - a, :], y_bottom[:, a2:, :]], axis=1)
    right = np.concatenate([y_right[:, :H0 * s - a, :], y_corner[:, a2:, :]], axis=1)
    return np.concatenate([left[:, :, :W0 * s - b], right[:, :, b2:]], axis=2)


def test_fold_order_matches_literal_col2im():
    rng = np.random.default_rng(3)
    k, st, n = 6, 2, 4  # 6x6 tiles at stride 2: up to 9 contributions per pixel
    tiles = [rng.standard_normal((1, k, k)).astype(np.float32) * 1e3 for _ in range(n * n)]
    origins = [(st * i, st * j) for i in range(n) for j in range(n)]
    H = st * (n - 1) + k
    lit = np.zeros((1, H, H), np.float32)
    for kh in range(k):          # torch col2im: kernel offsets outer, positions inner
        for kw in range(k):
            for idx, (i0, j0) in enumerate(origins):
                lit[0, i0 + kh, j0 + kw] += tiles[idx][0, kh, kw]
    assert np.array_equal(lit, _fold_sum(tiles, origins, (1, H, H)))


# ------------------------------------------------------------------ 1. translation equivariance
@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("s", SCALES)
def test_nearest_upsampling_reproduced_exactly(mode, h, w, s):
    img = _img(h, w, seed=h * w)
    out = tiled_forward(img, nearest(s), s, mode=mode)
    assert out.dtype == np.float32 and out.shape == (3, h * s, w * s)
    assert np.array_equal(out, _up(img, s))


@pytest.mark.parametrize("blend", ["linear", "cosine", "trim", "crop"])
@pytest.mark.parametrize("overlap", [0, 5, 8, 24, 40])
def test_fast_any_overlap_and_blend_is_seamless_for_equivariant_net(blend, overlap):
    img = _img(131, 77, seed=overlap)
    out = tiled_forward(img, nearest(2), 2, overlap=overlap, blend=blend)
    assert np.array_equal(out, _up(img, 2))


@pytest.mark.parametrize("h,w", [(1, 1), (7, 300), (47, 48), (48, 47), (2, 2)])
def test_tiny_and_thin_images(h, w):
    img = _img(h, w)
    for mode in ("fast", "exact"):
        assert np.array_equal(tiled_forward(img, nearest(3), 3, mode=mode), _up(img, 3))


# ------------------------------------------------------------------ 2. exact == official stitching
@pytest.mark.parametrize("h,w", SIZES + [(60, 60), (59, 72), (72, 59), (97, 49), (61, 61)])
@pytest.mark.parametrize("s", SCALES)
def test_exact_matches_naive_official_forward_chop(h, w, s):
    img = _img(h, w, seed=7 + h + w)
    fn = tile_local(s)
    out = tiled_forward(img, fn, s, mode="exact", batch_size=5)
    if min(h, w) < PATCH:  # documented: reflect-pad to 48, run, crop
        padded = np.pad(img, ((0, 0), (0, max(0, 48 - h)), (0, max(0, 48 - w))), mode="reflect")
        ref = naive_forward_chop(padded, fn, s)[:, :h * s, :w * s]
    else:
        ref = naive_forward_chop(img, fn, s)
    assert out.shape == ref.shape == (3, h * s, w * s)
    assert np.abs(out - ref).max() <= 1e-6
    assert np.array_equal(out, ref)  # bit-for-bit, including the float32 summation order


def test_exact_48x48_is_the_plain_tile_output():
    img = _img(48, 48)
    fn = tile_local(2)
    assert np.array_equal(tiled_forward(img, fn, 2, mode="exact"), fn(img[None])[0])


# ------------------------------------------------------------------ 3. tile counts
def test_tile_counts_256_and_ratio():
    exact, fast = count_tiles(256, 256, "exact"), count_tiles(256, 256, "fast")
    # 256: h_cut = 208 % 12 = 4, nh = nw = 18 -> official 18*18 + 2*36 + 1
    assert official_tile_count(256, 256) == 397
    assert exact == 18 * 18 + 18 + 18 + 1 == 361  # top/left strips deduplicated
    assert fast == 49 and count_tiles(256, 256, "fast", overlap=16) == 64
    assert official_tile_count(256, 256) / fast >= 4 and exact / fast >= 4
    for mode, n in (("exact", exact), ("fast", fast)):
        calls = []
        _, st = tiled_forward(_img(256, 256), lambda x: calls.append(1) or x, 1, mode=mode,
                              batch_size=8, return_stats=True)
        assert st.tiles == n and st.batches == len(calls) == -(-n // 8)
        assert st.pad_tiles == 8 * st.batches - n


def test_exact_dedup_counts():
    assert count_tiles(48, 48, "exact") == 1 and official_tile_count(48, 48) == 6
    assert count_tiles(60, 60, "exact") == 4          # h_cut = w_cut = 0: strips are grid tiles
    assert count_tiles(61, 60, "exact") == 4 + 2      # + bottom strip
    assert count_tiles(61, 61, "exact") == 4 + 2 + 2 + 1
    assert count_tiles(750, 1000, "exact") == 59 * 80 + 80 + 59 + 1
    assert official_tile_count(750, 1000) == 59 * 80 + 2 * (59 + 80) + 1
    assert count_tiles(256, 256, self_ensemble=True) == 8 * count_tiles(256, 256)


# ------------------------------------------------------------------ 4. fixed batch shape
@pytest.mark.parametrize("mode", ["exact", "fast"])
@pytest.mark.parametrize("bs", [1, 3, 8, 64])
def test_tile_fn_always_gets_exactly_batch_size_tiles(mode, bs):
    shapes = []

    def fn(x):
        shapes.append(x.shape)
        assert x.dtype == np.float32 and x.flags.c_contiguous
        return _up(x, 2)
    img = _img(101, 127)
    out, st = tiled_forward(img, fn, 2, mode=mode, batch_size=bs, return_stats=True)
    assert set(shapes) == {(bs, 3, 48, 48)}
    assert st.tiles == count_tiles(101, 127, mode) and st.batches == len(shapes)
    assert np.array_equal(out, _up(img, 2))


def test_tiler_object_reports_stats_per_image():
    tiler = Tiler(nearest(2), 2, mode="exact", batch_size=4)
    tiler(_img(61, 61))
    assert tiler.stats.tiles == tiler.count(61, 61) == 9 and tiler.stats.batches == 3
    tiler(_img(48, 48))
    assert tiler.stats.tiles == 1 and tiler.stats.pad_tiles == 3


def test_wrong_tile_fn_output_shape_is_an_error():
    with pytest.raises(ValueError, match="tile_fn returned"):
        tiled_forward(_img(60, 60), lambda x: x, 2)


def test_progress_reports_every_batch_up_to_total():
    seen = []
    tiled_forward(_img(100, 124), nearest(1), 1, batch_size=4, self_ensemble=True,
                  progress=lambda d, t: seen.append((d, t)))
    total = count_tiles(100, 124, self_ensemble=True)
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ------------------------------------------------------------------ self-ensemble
@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_self_ensemble(mode):
    img = _img(61, 83)
    assert np.array_equal(tiled_forward(img, nearest(2), 2, mode=mode, self_ensemble=True), _up(img, 2))
    fn = tile_local(2)  # not equivariant: x8 must be the mean of the 8 inverted passes
    got = tiled_forward(img, fn, 2, mode=mode, self_ensemble=True)
    runs = []
    for t in range(8):
        x = img[:, :, ::-1] if t & 1 else img
        x = x[:, ::-1, :] if t & 2 else x
        x = x.transpose(0, 2, 1) if t & 4 else x
        y = tiled_forward(np.ascontiguousarray(x), fn, 2, mode=mode)
        y = y.transpose(0, 2, 1) if t & 4 else y
        y = y[:, ::-1, :] if t & 2 else y
        runs.append(y[:, :, ::-1] if t & 1 else y)
    np.testing.assert_allclose(got, np.mean(runs, axis=0), rtol=0, atol=1e-4)
    assert not np.allclose(got, tiled_forward(img, fn, 2, mode=mode), atol=1e-2)


# ------------------------------------------------------------------ fast-mode quality (measured default)
def _box(x, r):
    p = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (r + 1, r), (r + 1, r)))
    c = p.cumsum(2).cumsum(3)
    k = 2 * r + 1
    return (c[:, :, k:, k:] - c[:, :, :-k, k:] - c[:, :, k:, :-k] + c[:, :, :-k, :-k]) / k ** 2


def test_fast_default_overlap_hides_a_local_receptive_field():
    """A per-tile 5x5 box blur (zero padding) is corrupted within 2 px of each tile edge; the
    default window ignores the outer quarter of the overlap, so fast mode equals applying the
    blur to the whole image; a radius-8 blur (like IPT's conv head) stays within ~2/255."""
    img = _img(150, 170)
    blur2 = lambda x: _up(_box(x, 2), 2).astype(np.float32)
    out = tiled_forward(img, blur2, 2)
    assert np.abs(out - blur2(img[None])[0]).max() < 1e-3
    blur8 = lambda x: _up(_box(_box(_box(_box(x, 2), 2), 2), 2), 2).astype(np.float32)
    out = tiled_forward(img, blur8, 2, overlap=16)
    assert np.abs(out - blur8(img[None])[0]).max() < 2.5
    out = tiled_forward(img, blur8, 2, overlap=DEFAULT_OVERLAP)
    assert np.abs(out - blur8(img[None])[0]).max() < 8


# ------------------------------------------------------------------ 5. the real official reference
@pytest.fixture(scope="module")
def ref_model(request):
    pytest.importorskip("mindspore")
    pytest.importorskip("src.ipt")
    try:
        return request.getfixturevalue("small_ref_model")
    except pytest.FixtureLookupError:
        pytest.skip("no small_ref_model fixture in tests/conftest.py")


def _runner(model, task):
    import mindspore as ms
    net = model.task_net(task)
    return lambda x: net(ms.Tensor(x)).asnumpy()


@pytest.mark.parametrize("name,ks", [("chopa", (0, 1, 2, 3, 4, 5)), ("chopb", (1, 3)), ("chopc", (0, 3))])
def test_exact_mode_reproduces_official_forward_chop(ref_model, reference_io, name, ks):
    from src.tasks import PRETRAIN_ORDER
    io32, io64 = reference_io
    x = io32[f"{name}_in"][0]
    for k in ks:
        task = PRETRAIN_ORDER[k]
        out = tiled_forward(x, _runner(ref_model, task), ref_model.tasks[k].scale, mode="exact",
                            batch_size=16)
        ref64 = io64[f"{name}_out64_t{k}"][0]
        assert out.shape == ref64.shape
        assert np.abs(out - ref64).max() < 5e-3, (name, task)
        assert np.abs(out - io32[f"{name}_out_t{k}"][0]).max() < 5e-3, (name, task)
