import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def test_sort():
    data = [(i * 7919) % 10007 for i in range(20000)]
    assert sorted(data)[0] == 0


def test_json_roundtrip():
    doc = {"k%d" % i: list(range(i % 50)) for i in range(2000)}
    assert json.loads(json.dumps(doc)) == doc


def test_threads():
    with ThreadPoolExecutor(2) as ex:
        assert sum(ex.map(lambda n: sum(range(n)), [10**5] * 8)) == 8 * sum(range(10**5))


def test_subprocess():
    out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True)
    assert out.stdout.strip() == "42"
