"""multiprocessing.Pool and ProcessPoolExecutor, as drop-ins that never fork.

``Pool`` runs on actors: the initializer runs once per process and the
mapped functions see what it set; lambdas and functions defined here (in
``__main__``) work.  ``progress="force"`` draws a bar on stderr even when it
is not a terminal (``progress=True`` only draws on a terminal).

Run with:  python examples/multiprocessing_pool.py
"""

import concurrent.futures

import actorkit as ray
from actorkit.util import as_completed
from actorkit.util.futures import Executor
from actorkit.util.multiprocessing import Pool

vocabulary = None


def load_vocabulary(words):
    global vocabulary  # set once in each pool process
    vocabulary = {w: i for i, w in enumerate(words)}


def encode(sentence):
    return [vocabulary.get(w, -1) for w in sentence.split()]


def main():
    sentences = ["the cat sat", "a dog ran", "the dog sat"] * 4
    with Pool(2, initializer=load_vocabulary, initargs=(["the", "a", "cat", "dog", "sat"],)) as pool:
        print("map:", pool.map(encode, sentences[:3]))
        print("imap:", list(pool.imap(len, sentences, progress="force"))[:3])
        print("starmap:", pool.starmap(pow, [(2, 5), (3, 3)]))
        print("lambda:", pool.map(lambda s: s.upper(), sentences[:2]))
        result = pool.apply_async(encode, ("the end",))
        print("apply_async:", result.get(timeout=30))

    with Executor(max_workers=2) as ex:
        futures = [ex.submit(sum, range(n)) for n in (10, 100, 1000)]
        print("executor:", sorted(f.result() for f in concurrent.futures.as_completed(futures)))

    @ray.remote
    def square(x):
        return x * x

    refs = [square.remote(i) for i in range(10)]
    print("as_completed:", sorted(as_completed(refs, progress="force", desc="squares")))
    ray.shutdown()


if __name__ == "__main__":
    main()
