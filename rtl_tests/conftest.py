import pytest


@pytest.fixture(scope="session")
def trained_digits():
    """A BinaryNet MLP briefly trained on the digits split, and its lowering (checked exact on the test split)."""
    from hwnet.train.data import load_dataset
    from hwnet.train.lower import check_lowering, lower
    from hwnet.train.trainer import train_binarynet
    ds = load_dataset("digits")
    model, _ = train_binarynet(ds, hidden=(64, 64), epochs=8, seed=1)
    network = lower(model, name="digits-rtl")
    assert check_lowering(model, network, ds.test_x) == 0
    return model, network, ds
