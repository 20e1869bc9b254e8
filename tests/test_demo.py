"""The demo runs end to end and writes a self-contained report with every section."""
import re

from deepscope.demo import DEMO_SECTIONS, run_demo


def test_demo_writes_self_contained_report(tmp_path):
    page = run_demo(tmp_path / "demo", epochs=4, progress=False)
    html = page.read_text()
    assert "this probe failed" not in html
    assert html.count("<h2>") == len(DEMO_SECTIONS)
    assert "data:image/png;base64," in html
    # readable offline: no external resources
    assert not re.search(r"(src|href)=['\"]https?://", html)
    assert (tmp_path / "demo" / "model.safetensors").exists()
    assert list((tmp_path / "demo" / "figures").glob("*.png"))
