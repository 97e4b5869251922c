"""Input errors raised while collating in DataLoader workers come back whole: their class and sentence."""

import pytest
from torch.utils.data import DataLoader

from medtune.data import DataError, ImageLoadError, Rejection
from medtune.data.workers import CarryErrors, raise_carried

REJECTION = Rejection("train.json", 3, "q7", "image", "the image file x.png does not exist.")


def _collate(records):
    kind = records[0]
    if kind == "data":
        raise DataError(REJECTION)
    if kind == "image":
        raise ImageLoadError("Image file x.png (record 'q7') cannot be decoded.")
    return {"n": len(records)}


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [
        (
            "data",
            DataError,
            "train.json, record 3, id 'q7', field 'image': the image file x.png does not exist.",
        ),
        ("image", ImageLoadError, "Image file x.png (record 'q7') cannot be decoded."),
    ],
)
def test_an_error_in_a_worker_is_raised_again_as_itself(kind, cls, message):
    loader = DataLoader(["ok", kind], batch_size=1, collate_fn=CarryErrors(_collate), num_workers=1)
    batches = iter(loader)
    assert raise_carried(next(batches)) == {"n": 1}
    with pytest.raises(cls) as err:
        raise_carried(next(batches))
    assert str(err.value) == message  # no worker traceback folded into it
    if cls is DataError:
        assert err.value.rejection == REJECTION
