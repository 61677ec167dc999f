"""Ray's ``ray.experimental`` names that scripts import (``tqdm_ray``)."""
