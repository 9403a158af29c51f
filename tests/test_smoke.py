import redray


@redray.remote
def add(x, y):
    return x + y


def test_add_returns_sum(cluster):
    assert redray.get(add.remote(1, 2)) == 3


def test_chained_refs_resolve(cluster):
    ref = add.remote(add.remote(1, 2), 10)
    assert redray.get(ref) == 13
