"""A small image-processing pipeline: a pool of actors over numpy images.

Each actor keeps a filter kernel as state (built once in __init__); an
ActorPool hands images to whichever actor is free.  Images go to the object
store once (``put``) and the actors read them from shared memory without a
copy.  The same work then runs on ``Pool`` (the multiprocessing drop-in).

Run with:  python examples/image_pipeline.py
"""

import numpy as np

import actorkit as ray
from actorkit.util import ActorPool
from actorkit.util.multiprocessing import Pool


def make_image(seed, size=128):
    """A synthetic grayscale image: a bright square on noise."""
    rng = np.random.default_rng(seed)
    img = rng.random((size, size)) * 0.2
    lo = 16 + seed * 4
    img[lo : lo + 40, lo : lo + 40] += 0.7
    return img


def blur(img, kernel):
    """Separable box blur (numpy only)."""
    pad = len(kernel) // 2
    padded = np.pad(img, pad, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def describe(img):
    mask = img > 0.5
    ys, xs = np.nonzero(mask)
    return {
        "bright_pixels": int(mask.sum()),
        "center": (int(round(ys.mean())), int(round(xs.mean()))) if len(ys) else None,
    }


@ray.remote
class Processor:
    def __init__(self, width):
        self.kernel = np.ones(width) / width  # state kept by the actor
        self.processed = 0

    def process(self, index, img):
        self.processed += 1
        return index, describe(blur(img, self.kernel))

    def count(self):
        return self.processed


def pool_process(img):
    return describe(blur(img, np.ones(5) / 5))


def main():
    ray.init(num_cpus=4)
    images = [ray.put(make_image(seed)) for seed in range(8)]  # one copy each, in shared memory

    processors = [Processor.remote(5) for _ in range(3)]
    pool = ActorPool(processors)
    for index, stats in pool.map(lambda actor, item: actor.process.remote(*item), enumerate(images)):
        print(f"image {index}: {stats['bright_pixels']} bright pixels, center {stats['center']}")
    print("images per actor:", sum(ray.get([p.count.remote() for p in processors])))

    with Pool(2) as mp_pool:
        same = mp_pool.map(pool_process, [make_image(seed) for seed in range(8)])
    actor_results = [stats for _, stats in pool.map(lambda a, item: a.process.remote(*item), enumerate(images))]
    print("Pool gives the same results:", same == actor_results)
    ray.shutdown()


if __name__ == "__main__":
    main()
