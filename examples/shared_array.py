"""Workers fill the rows of one NumPy array in shared memory; the parent sees their writes
with nothing copied back.

Run it:  python examples/shared_array.py   (needs NumPy)
"""

import numpy as np

import manycore


def fill_row(image, row):
    # `image` arrived as a handle to the same memory: this writes the parent's array.
    image[row] = np.arange(image.shape[1]) * (row + 1)
    return float(image[row].sum())


image = manycore.shared_array((4, 5), dtype=np.int64)
with manycore.Pool(2) as pool:
    sums = pool.starmap(fill_row, [(image, row) for row in range(4)])
print(f"row sums from the workers: {sums}")
print(f"column sums in the parent: {image.sum(axis=0).tolist()}")
print(f"image * 2, a private array: {(image * 2)[3].tolist()}")
image.close()  # frees the shared memory (it is also freed at exit)
