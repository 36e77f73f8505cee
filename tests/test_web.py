"""The web page in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.demo import backgrounds, load_cutout, make_phone_photo, on_white


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(server.url + "/")
    yield opened
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory, stamps):
    stamp = next(s for s in stamps if s.id == "plants/flowers/flower3")
    path = tmp_path_factory.mktemp("photos") / "phone photo.jpg"
    path.write_bytes(make_phone_photo(load_cutout(stamp), backgrounds()[0], np.random.default_rng(3)))
    return stamp.id, path


def result_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results .card button", "buttons => buttons.map(b => b.dataset.itemId)")


def test_upload_shows_the_item_first_with_estimate_and_time(page, phone_photo):
    item_id, path = phone_photo
    # The catalogue's size arrives by its own request after the page loads.
    page.wait_for_function("document.querySelector('#catalog-size').textContent.includes('items in the catalogue')")
    page.set_input_files("#photo-input", str(path))
    page.wait_for_selector("#results .card")
    assert result_ids(page)[0] == item_id
    assert len(result_ids(page)) == 12
    assert "EUR" in page.text_content("#estimate-price")
    assert "found in" in page.text_content("#took")
    first = page.query_selector("#results .card")
    assert "similar" in first.text_content() and first.query_selector("img").get_attribute("alt")
    page.wait_for_function("document.querySelector('#results img').complete")
    assert page.evaluate("document.querySelector('#results img').naturalWidth") > 0


def test_result_opens_item_view_and_more_like_this(page, phone_photo):
    item_id, path = phone_photo
    page.set_input_files("#photo-input", str(path))
    page.wait_for_selector("#results .card")
    page.click(f"#results .card button[data-item-id='{item_id}']")
    page.wait_for_selector("#item-view:not([hidden])")
    assert page.text_content("#item-title") == "Flower"
    assert "plants" in page.text_content("#item-details")
    page.click("#more-like-this")
    page.wait_for_function("document.querySelector('#took').textContent.includes('like')")
    ids = result_ids(page)
    assert ids and item_id not in ids


def test_crop_searches_the_selected_region_only(page, tmp_path, stamps):
    left, right = (next(s for s in stamps if s.id == name) for name in ("vehicles/garbagetruck", "food/fruit/banana"))
    canvas = Image.new("RGB", (800, 400), "white")
    canvas.paste(on_white(load_cutout(left)).resize((400, 400)), (0, 0))
    canvas.paste(on_white(load_cutout(right)).resize((400, 400)), (400, 0))
    path = tmp_path / "two items.jpg"
    canvas.save(path, quality=92)
    page.set_input_files("#photo-input", str(path))
    page.wait_for_selector("#results .card")
    box = page.query_selector("#query-image").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.52, box["y"] + 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.98, box["y"] + box["height"] - 2, steps=5)
    page.mouse.up()
    page.click("#search-selection")
    page.wait_for_function(f"document.querySelector('#results .card button')?.dataset.itemId === '{right.id}'")
    assert page.is_visible("#clear-selection")


def test_phone_viewport_has_no_horizontal_overflow(browser, server, phone_photo):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    page = context.new_page()
    page.goto(server.url + "/")
    assert page.get_attribute("#photo-input", "capture") == "environment"
    assert page.get_attribute("#photo-input", "accept") == "image/*"
    page.set_input_files("#photo-input", str(phone_photo[1]))
    page.wait_for_selector("#results .card")
    page.click("#results .card button")
    page.wait_for_selector("#item-view:not([hidden])")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    wide = page.evaluate("""[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 376)
                            .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)""")
    context.close()
    assert overflow <= 0 and not wide, wide


def test_a_file_that_is_not_a_photo_shows_a_clear_message(page, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(b"this is text, not a photo")
    page.set_input_files("#photo-input", str(fake))
    page.wait_for_selector("#status.error")
    assert "not an image" in page.text_content("#status")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    page.set_input_files("#photo-input", str(text))
    page.wait_for_function("document.querySelector('#status').textContent.includes('is not an image')")


def test_filters_apply_to_the_search(page, phone_photo):
    page.set_input_files("#photo-input", str(phone_photo[1]))
    page.wait_for_selector("#results .card")
    page.select_option("#category", "animals")
    page.wait_for_function("[...document.querySelectorAll('#results .card .line span:first-child')]"
                           ".every(s => s.textContent === 'animals')")
    page.select_option("#k", "6")
    page.wait_for_function("document.querySelectorAll('#results .card').length === 6")


def test_drop_and_paste_are_wired(page, phone_photo):
    data = list(phone_photo[1].read_bytes())
    page.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], 'dropped.jpg', {type: 'image/jpeg'});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }""",
        data,
    )
    page.wait_for_selector("#results .card")
    assert result_ids(page)[0] == phone_photo[0]




def test_several_photos_of_one_item_and_a_lot_gallery(browser, server, stamps, tmp_path):
    """A lot photographed twice (a second photo added through the API); the query is two phone photos of it."""
    import httpx

    from tests.conftest import TOKEN

    stamp = next(s for s in stamps if s.subcategory == "birds")
    turned = tmp_path / "turned.jpg"
    on_white(load_cutout(stamp).rotate(40, expand=True)).save(turned, "JPEG", quality=90)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        added = client.post(f"/api/items/{stamp.id}/photos", headers={"Authorization": f"Bearer {TOKEN}"},
                            files={"image": ("turned.jpg", turned.read_bytes(), "image/jpeg")})
        assert added.status_code == 200 and added.json()["photo_count"] == 2
    rng = np.random.default_rng(8)
    shots = []
    for number in range(2):
        path = tmp_path / f"shot-{number}.jpg"
        path.write_bytes(make_phone_photo(load_cutout(stamp), backgrounds()[number + 1], rng))
        shots.append(str(path))
    for width, height in ((375, 800), (1280, 900)):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.goto(server.url + "/")
        page.set_input_files("#photo-input", shots)
        page.wait_for_selector("#results .card")
        assert page.locator("#query-strip li").count() == 2
        first = page.locator("#results .card").first
        assert first.locator("button").get_attribute("data-item-id") == stamp.id
        assert "of 2" in first.inner_text() and "matches your photo" in first.inner_text()
        first.locator("button").click()
        page.wait_for_selector("#item-view:not([hidden])")
        assert page.locator("#item-gallery li").count() == 2
        page.screenshot(path=str(tmp_path / f"lots-{width}.png"), full_page=True)
        context.close()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.delete(f"/api/items/{stamp.id}/photos/1", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_same_object_is_marked_and_opening_it_shows_why(browser, server, stamps, tmp_path):
    """A lot sold before, photographed again by a phone: the card says so, and the item view joins the points."""
    import httpx

    from tests.conftest import TOKEN, textured_stamps

    (stamp, cutout), = textured_stamps(stamps, 1)
    studio = tmp_path / "studio.jpg"
    on_white(cutout).save(studio, "JPEG", quality=92)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        added = client.post("/api/items", headers=auth, files={"image": ("studio.jpg", studio.read_bytes(), "image/jpeg")},
                            data={"id": "sold-before", "title": "Sold before", "price": "1200", "currency": "EUR",
                                  "sold_at": "2024-03-02"})
        assert added.status_code == 201, added.text
    phone = tmp_path / "phone.jpg"
    phone.write_bytes(make_phone_photo(cutout, backgrounds()[2], np.random.default_rng(4), perspective=0.08))
    try:
        for width, height in ((375, 800), (1280, 900)):
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            page.goto(server.url + "/")
            page.set_input_files("#photo-input", str(phone))
            page.wait_for_selector("#results .card")
            first = page.locator("#results .card").first
            assert first.locator("button").get_attribute("data-item-id") == "sold-before"
            assert first.locator(".same-object").inner_text() == "Same object — sold on 2024-03-02 for 1,200 EUR"
            marked = page.eval_on_selector_all("#results .card:has(.same-object) button", "bs => bs.map(b => b.dataset.itemId)")
            assert set(marked) <= {"sold-before", stamp.id}  # the demo catalogue holds this stamp too: the same object
            first.locator("button").click()
            page.wait_for_selector("#why:not([hidden])")
            assert "points agree" in page.text_content("#why-caption")
            drawn = page.evaluate("""() => { const c = document.getElementById('why-canvas');
                const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let bright = 0;
                for (let i = 0; i < pixels.length; i += 4) if (pixels[i] > 200 && pixels[i + 1] > 180 && pixels[i + 2] < 60) bright++;
                return {width: c.width, height: c.height, yellow: bright}; }""")
            assert drawn["width"] > drawn["height"] > 0 and drawn["yellow"] > 50  # the outlined region
            page.screenshot(path=str(tmp_path / f"same-object-{width}.png"), full_page=True)
            context.close()
    finally:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.delete("/api/items/sold-before", headers=auth).status_code == 200


def test_catalogue_this_item_adds_the_lot_and_it_is_then_found(browser, server, stamps, tmp_path):
    """The panel is prefilled from similar lots; with the write token one click adds the new lot with its photos."""
    import httpx

    from tests.conftest import TOKEN

    stamp = next(s for s in stamps if s.id == "animals/mammals/dingo")
    photo = tmp_path / "new lot.jpg"
    photo.write_bytes(make_phone_photo(load_cutout(stamp), backgrounds()[4], np.random.default_rng(21)))
    try:
        for width, height in ((375, 900), (1280, 1000)):
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            page.goto(server.url + "/")
            page.set_input_files("#photo-input", str(photo))
            page.wait_for_selector("#catalogue-panel:not([hidden])")
            assert page.text_content("#catalogue-summary") == "· suggested: animals · mammals"
            assert not page.is_visible("#new-category")  # folded: a buyer searching is not shown a cataloguing form
            page.click("#catalogue-panel summary")
            assert page.input_value("#new-category") == "animals"
            assert "of the vote" in page.text_content("#new-category-note")
            assert page.locator("#new-fields input[data-field='subcategory']").count() == 1
            subcategory = page.input_value("#new-fields input[data-field='subcategory']")
            page.screenshot(path=str(tmp_path / f"catalogue-panel-{width}.png"), full_page=True)
            context.close()
        page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        page.goto(server.url + "/")
        page.set_input_files("#photo-input", str(photo))
        page.wait_for_selector("#catalogue-panel:not([hidden])")
        page.click("#catalogue-panel summary")
        page.click("#add-lot")  # no token yet: said plainly, nothing sent
        assert "needs the write token" in page.text_content("#catalogue-status")
        page.fill("#new-id", "catalogued-here")
        page.fill("#new-title", "Dingo, carved")
        page.fill("#new-fields input[data-field='subcategory']", "carvings")
        page.fill("#new-price", "140")
        page.fill("#new-sold-at", "2026-11-20")
        page.fill("#new-token", TOKEN)
        page.click("#add-lot")
        page.wait_for_function("document.querySelector('#catalogue-status').textContent.startsWith('Added lot')")
        assert page.text_content("#catalogue-status") == "Added lot catalogued-here with 1 photo."
        with httpx.Client(base_url=server.url, timeout=60) as client:
            lot = client.get("/api/items/catalogued-here").json()
            found = client.post("/api/search", files={"image": ("again.jpg", photo.read_bytes(), "image/jpeg")}).json()
        assert [hit["id"] for hit in found["results"]][:1] == ["catalogued-here"], found["results"][:3]
        assert lot["category"] == "animals" and lot["title"] == "Dingo, carved" and lot["photo_count"] == 1
        assert subcategory == "mammals"  # suggested, then edited before adding
        assert lot["extra"] == {"subcategory": "carvings"} and lot["price"] == 140 and lot["sold_at"] == "2026-11-20"
        assert lot["currency"] == "EUR"  # prefilled from the estimate
    finally:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.delete("/api/items/catalogued-here", headers={"Authorization": f"Bearer {TOKEN}"})
