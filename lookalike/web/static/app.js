// The lookalike web page: it only calls the REST API and shows what comes back.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, files: [], selection: null, lastQuery: null };

function setStatus(message, kind = "") {
  const status = $("status");
  status.textContent = message;
  status.className = "status" + (kind ? " " + kind : "");
}

function money(value, currency) {
  if (value === null || value === undefined) return "—";
  const amount = Number(value).toLocaleString(undefined, { maximumFractionDigits: 0 });
  return currency ? `${amount} ${currency}` : amount;
}

function filterParams() {
  const params = new URLSearchParams({ k: $("k").value });
  if ($("category").value) params.set("category", $("category").value);
  if ($("min-price").value) params.set("min_price", $("min-price").value);
  if ($("max-price").value) params.set("max_price", $("max-price").value);
  return params;
}

async function callApi(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    throw new Error("The server cannot be reached. Check your connection and try again.");
  }
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `The server answered ${response.status}.`);
  return body;
}

async function search(query) {
  state.lastQuery = query;
  setStatus("Searching…", "loading");
  $("answer").setAttribute("aria-busy", "true");
  const params = "?" + filterParams().toString();
  try {
    let body;
    if (query.blobs) {
      const form = new FormData();
      query.blobs.forEach((blob, index) => form.append("image", blob, blob.name || `photo-${index + 1}.jpg`));
      body = await callApi("/api/search" + params, { method: "POST", body: form });
    } else {
      body = await callApi("/api/search/item" + params, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ item_id: query.itemId }) });
    }
    showAnswer(body, query);
    setStatus("");
  } catch (error) {
    setStatus(error.message, "error");
  } finally {
    $("answer").removeAttribute("aria-busy");
  }
}

function showAnswer(body, query) {
  $("answer").hidden = false;
  $("took").textContent = `· ${body.results.length} found in ${Math.round(body.took_ms)} ms` +
    (query.itemId ? ` · like ${query.itemId}` : "");
  showEstimate(body.estimate);
  showCataloguePanel(body.suggestions, body.estimate, query);
  const list = $("results");
  list.innerHTML = "";
  if (!body.results.length) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "No item matches these filters.";
    list.append(empty);
  }
  for (const hit of body.results) list.append(resultCard(hit));
  if (window.innerWidth < 700) $("answer").scrollIntoView({ behavior: "smooth", block: "start" });
}

function showEstimate(estimate) {
  const box = $("estimate");
  box.innerHTML = "";
  if (!estimate || estimate.price === null) {
    box.className = "estimate low";
    const reason = estimate && estimate.declined ? estimate.declined : "no similar lot has a price";
    box.textContent = `No estimate: ${reason}.`;
    return;
  }
  box.className = "estimate";
  const label = document.createElement("div");
  label.className = "muted";
  label.textContent = "Estimated price";
  const price = document.createElement("div");
  price.className = "price";
  price.id = "estimate-price";
  price.textContent = money(estimate.price, estimate.currency);
  const range = document.createElement("div");
  range.id = "estimate-range";
  range.textContent = `${money(estimate.low, estimate.currency)} to ${money(estimate.high, estimate.currency)}, ` +
    `from ${estimate.neighbours.length} similar sold lots`;
  const meaning = document.createElement("div");
  meaning.className = "small";
  meaning.textContent = `${estimate.meaning.charAt(0).toUpperCase()}${estimate.meaning.slice(1)}. ` +
    `Closest match ${Math.round(estimate.best_score * 100)}% similar.`;
  box.append(label, price, range, meaning);
}

function fieldRow(name, value, note) {
  const label = document.createElement("label");
  label.textContent = `${name} `;
  const input = document.createElement("input");
  input.dataset.field = name;
  input.maxLength = 2000;
  input.value = value || "";
  label.append(input);
  const hint = document.createElement("p");
  hint.className = "small muted";
  hint.textContent = note;
  const row = document.createElement("div");
  row.append(label, hint);
  return row;
}

function voteNote(suggestion, reason) {
  if (suggestion) return `${Math.round(suggestion.share * 100)}% of the vote: ${suggestion.support.slice(0, 3).join(", ")}`;
  return reason ? `Not suggested: ${reason}.` : "";
}

function showCataloguePanel(suggestions, estimate, query) {
  const panel = $("catalogue-panel");
  panel.hidden = !query.blobs;
  if (!query.blobs) return;
  suggestions = suggestions || { fields: {}, withheld: {}, title: null };
  $("catalogue-status").textContent = "";
  $("new-title").value = suggestions.title || "";
  $("new-category").value = suggestions.category ? suggestions.category.value : "";
  $("new-category-note").textContent = voteNote(suggestions.category, suggestions.withheld.category);
  const fields = $("new-fields");
  fields.innerHTML = "";
  const names = [...new Set([...Object.keys(suggestions.fields), ...Object.keys(suggestions.withheld)])]
    .filter((name) => name !== "category");
  for (const name of names) {
    const found = suggestions.fields[name];
    fields.append(fieldRow(name, found ? found.value : "", voteNote(found, suggestions.withheld[name])));
  }
  const found = [suggestions.category, ...Object.values(suggestions.fields)].filter(Boolean).map((s) => s.value);
  $("catalogue-summary").textContent = found.length ? `· suggested: ${found.join(" · ")}` : "· nothing suggested";
  $("new-currency").value = (estimate && estimate.currency) || "";
  $("new-token").value = sessionStorage.getItem("lookalike-token") || "";
}

async function addLot(event) {
  event.preventDefault();
  const query = state.lastQuery;
  if (!query || !query.blobs) return;
  const token = $("new-token").value.trim();
  const status = $("catalogue-status");
  if (!token) {
    status.textContent = "Adding a lot needs the write token.";
    status.className = "small error";
    return;
  }
  const form = new FormData();
  // The lot gets the photos as taken, even when a selected region was searched.
  const photos = state.files.length ? state.files : query.blobs;
  photos.forEach((blob, index) => form.append("image", blob, blob.name || `photo-${index + 1}.jpg`));
  for (const [name, id] of [["id", "new-id"], ["title", "new-title"], ["category", "new-category"],
                            ["price", "new-price"], ["currency", "new-currency"], ["sold_at", "new-sold-at"]]) {
    if ($(id).value.trim()) form.append(name, $(id).value.trim());
  }
  const extra = {};
  for (const input of $("new-fields").querySelectorAll("input")) {
    if (input.value.trim()) extra[input.dataset.field] = input.value.trim();
  }
  form.append("extra", JSON.stringify(extra));
  status.className = "small";
  status.textContent = "Adding…";
  $("add-lot").disabled = true;
  try {
    const lot = await callApi("/api/items", { method: "POST", body: form, headers: { Authorization: `Bearer ${token}` } });
    sessionStorage.setItem("lookalike-token", token);
    status.textContent = `Added lot ${lot.id} with ${lot.photo_count} photo${lot.photo_count === 1 ? "" : "s"}.`;
    status.dataset.itemId = lot.id;
    loadCatalogInfo(false);
  } catch (error) {
    status.className = "small error";
    status.textContent = error.message;
  } finally {
    $("add-lot").disabled = false;
  }
}

function resultCard(hit) {
  const item = document.createElement("li");
  item.className = "card";
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.itemId = hit.id;
  button.setAttribute("aria-label", `${hit.title || hit.id}, ${money(hit.price, hit.currency)}, ` +
    `${Math.round(hit.score * 100)}% similar: open`);
  const image = document.createElement("img");
  image.src = hit.thumb_url;
  image.alt = hit.title || hit.id;
  image.loading = "lazy";
  const meta = document.createElement("div");
  meta.className = "meta";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = hit.title || hit.id;
  const line = document.createElement("span");
  line.className = "line";
  line.innerHTML = "";
  const category = document.createElement("span");
  category.textContent = hit.category || "";
  const price = document.createElement("span");
  price.textContent = money(hit.price, hit.currency);
  line.append(category, price);
  const score = document.createElement("span");
  score.className = "score small muted";
  score.textContent = `${Math.round(hit.score * 100)}% similar`;
  meta.append(title, line, score);
  if (hit.same_object) {
    const badge = document.createElement("span");
    badge.className = "same-object";
    const sold = [hit.sold_at ? `sold on ${hit.sold_at}` : "", hit.price !== null ? `for ${money(hit.price, hit.currency)}` : ""];
    badge.textContent = ["Same object", sold.filter(Boolean).join(" ")].filter(Boolean).join(" — ");
    meta.append(badge);
  } else if (hit.inliers) {
    const points = document.createElement("span");
    points.className = "small muted";
    points.textContent = `${hit.inliers} matching points`;
    meta.append(points);
  }
  if (hit.photo_count > 1 || hit.matched_query !== undefined && hit.matched_query !== null) {
    const matched = document.createElement("span");
    matched.className = "matched small muted";
    const parts = [];
    if (hit.photo_count > 1) parts.push(`photo ${hit.matched_photo + 1} of ${hit.photo_count}`);
    if (hit.matched_query !== undefined && hit.matched_query !== null) parts.push(`matches your photo ${hit.matched_query + 1}`);
    matched.textContent = parts.join(" · ");
    meta.append(matched);
  }
  button.append(image, meta);
  button.addEventListener("click", () => openItem(hit.id, hit));
  item.append(button);
  return item;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("photo did not load"));
    image.src = url;
  });
}

// Why a verified result matched: the query photo and the lot's photo side by side, matching points joined,
// and the outline of where the lot's photo lies in the query photo.
async function showWhy(hit) {
  const section = $("why");
  const match = hit && hit.match;
  const query = state.lastQuery;
  section.hidden = true;
  if (!match || !match.pairs.length || !query) return;
  const which = match.query_photo || 0;
  let queryUrl, revoke = false;
  if (query.blobs && query.blobs[which]) {
    queryUrl = URL.createObjectURL(query.blobs[which]);
    revoke = true;
  } else if (query.itemId) {
    queryUrl = `/api/items/${encodeURI(query.itemId)}/photos/${which}?size=full`;
  } else {
    return;
  }
  try {
    const [left, right] = await Promise.all([loadImage(queryUrl), loadImage(hit.image_url)]);
    const canvas = $("why-canvas");
    const gap = 12;
    const height = Math.min(360, Math.max(left.naturalHeight, right.naturalHeight));
    const leftWidth = left.naturalWidth * height / left.naturalHeight;
    const rightWidth = right.naturalWidth * height / right.naturalHeight;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round((leftWidth + gap + rightWidth) * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.aspectRatio = `${leftWidth + gap + rightWidth} / ${height}`;
    const draw = canvas.getContext("2d");
    draw.scale(ratio, ratio);
    draw.drawImage(left, 0, 0, leftWidth, height);
    draw.drawImage(right, leftWidth + gap, 0, rightWidth, height);
    if (match.region) {
      draw.strokeStyle = "#ffd400";
      draw.lineWidth = 3;
      draw.beginPath();
      match.region.forEach(([x, y], index) => draw[index ? "lineTo" : "moveTo"](x * leftWidth, y * height));
      draw.closePath();
      draw.stroke();
    }
    draw.lineWidth = 1.5;
    match.pairs.forEach(([qx, qy, cx, cy], index) => {
      draw.strokeStyle = `hsl(${(index * 47) % 360} 90% 50%)`;
      draw.beginPath();
      draw.moveTo(qx * leftWidth, qy * height);
      draw.lineTo(leftWidth + gap + cx * rightWidth, cy * height);
      draw.stroke();
    });
    canvas.setAttribute("aria-label", `Your photo and the lot's photo side by side: ${match.inliers} matching points` +
      (match.region ? ", the lot's photo outlined in yours" : ""));
    $("why-caption").textContent = `${match.inliers} points agree under one perspective` +
      (hit.same_object ? ": the same object." : ". Not enough to call it the same object.");
    section.hidden = false;
  } catch (error) {
    section.hidden = true;
  } finally {
    if (revoke) URL.revokeObjectURL(queryUrl);
  }
}

async function openItem(itemId, hit = null) {
  setStatus("Loading item…", "loading");
  try {
    const item = await callApi("/api/items/" + encodeURI(itemId));
    $("item-image").src = item.thumb_url;
    $("item-image").alt = item.title || item.id;
    const gallery = $("item-gallery");
    gallery.innerHTML = "";
    gallery.hidden = item.photos.length < 2;
    for (const photo of item.photos) {
      const entry = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.setAttribute("aria-label", `Photo ${photo.index + 1} of ${item.photos.length}`);
      const thumb = document.createElement("img");
      thumb.src = photo.thumb_url;
      thumb.alt = "";
      button.append(thumb);
      button.addEventListener("click", () => { $("item-image").src = photo.thumb_url; });
      entry.append(button);
      gallery.append(entry);
    }
    $("item-title").textContent = item.title || item.id;
    const details = $("item-details");
    details.innerHTML = "";
    const rows = [["Id", item.id], ["Category", item.category], ["Price", money(item.price, item.currency)],
                  ["Sold", item.sold_at]];
    for (const [key, value] of Object.entries(item.extra || {})) rows.push([key, String(value)]);
    for (const [key, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      const term = document.createElement("dt");
      term.textContent = key;
      const data = document.createElement("dd");
      data.textContent = value;
      details.append(term, data);
    }
    $("more-like-this").dataset.itemId = item.id;
    await showWhy(hit);
    $("item-view").hidden = false;
    $("item-view").scrollIntoView({ behavior: "smooth", block: "start" });
    setStatus("");
  } catch (error) {
    setStatus(error.message, "error");
  }
}

function useFiles(files, append = false) {
  files = [...files].filter(Boolean);
  if (!files.length) return;
  const bad = files.find((file) => file.type && !file.type.startsWith("image/"));
  if (bad) {
    setStatus(`“${bad.name}” is not an image. Choose a photo (JPEG, PNG, HEIC, WebP…).`, "error");
    return;
  }
  state.files = (append ? [...state.files, ...files] : files).slice(0, 10);
  state.file = state.files[0];
  state.selection = null;
  $("selection").hidden = true;
  $("search-selection").hidden = true;
  $("clear-selection").hidden = true;
  const image = $("query-image");
  if (image.dataset.objectUrl) URL.revokeObjectURL(image.dataset.objectUrl);
  image.dataset.objectUrl = URL.createObjectURL(state.file);
  image.src = image.dataset.objectUrl;
  showQueryStrip();
  $("preview").hidden = false;
  $("item-view").hidden = true;
  search({ blobs: state.files });
}

function showQueryStrip() {
  const strip = $("query-strip");
  for (const old of strip.querySelectorAll("img")) URL.revokeObjectURL(old.src);
  strip.innerHTML = "";
  strip.hidden = state.files.length < 2;
  $("crop-help").hidden = state.files.length > 1;  // a region is searched from a single photo
  state.files.forEach((file, index) => {
    const entry = document.createElement("li");
    const thumb = document.createElement("img");
    thumb.src = URL.createObjectURL(file);
    thumb.alt = `Your photo ${index + 1}`;
    entry.append(thumb);
    strip.append(entry);
  });
}

// Cropping: drag a rectangle on the photo, then search that region only.
function setupCrop() {
  const area = $("crop-area");
  const image = $("query-image");
  const box = $("selection");
  let start = null;
  const point = (event) => {
    const rect = image.getBoundingClientRect();
    return { x: Math.min(Math.max(event.clientX - rect.left, 0), rect.width),
             y: Math.min(Math.max(event.clientY - rect.top, 0), rect.height) };
  };
  area.addEventListener("pointerdown", (event) => {
    if (!state.file || state.files.length > 1) return;
    start = point(event);
    area.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  area.addEventListener("pointermove", (event) => {
    if (!start) return;
    const now = point(event);
    const rect = { x: Math.min(start.x, now.x), y: Math.min(start.y, now.y),
                   w: Math.abs(now.x - start.x), h: Math.abs(now.y - start.y) };
    Object.assign(box.style, { left: rect.x + "px", top: rect.y + "px", width: rect.w + "px", height: rect.h + "px" });
    box.hidden = false;
    state.selection = rect;
  });
  area.addEventListener("pointerup", () => {
    start = null;
    const big = state.selection && state.selection.w > 8 && state.selection.h > 8;
    if (!big) { state.selection = null; box.hidden = true; }
    $("search-selection").hidden = !big;
    $("clear-selection").hidden = !big;
  });
  $("clear-selection").addEventListener("click", () => {
    state.selection = null;
    box.hidden = true;
    $("search-selection").hidden = true;
    $("clear-selection").hidden = true;
    search({ blobs: state.files });
  });
  $("search-selection").addEventListener("click", () => {
    const selection = state.selection;
    if (!selection) return;
    const scaleX = image.naturalWidth / image.clientWidth;
    const scaleY = image.naturalHeight / image.clientHeight;
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(selection.w * scaleX));
    canvas.height = Math.max(1, Math.round(selection.h * scaleY));
    canvas.getContext("2d").drawImage(image, selection.x * scaleX, selection.y * scaleY, canvas.width, canvas.height,
                                      0, 0, canvas.width, canvas.height);
    canvas.toBlob((blob) => search({ blobs: [blob], cropped: true }), "image/jpeg", 0.92);
  });
}

async function loadCatalogInfo(withCategories = true) {
  try {
    const [health, categories] = await Promise.all([callApi("/api/health"), callApi("/api/categories")]);
    $("catalog-size").textContent = `${health.items.toLocaleString()} items in the catalogue`;
    if (!withCategories) return;
    for (const row of categories) {
      const option = document.createElement("option");
      option.value = row.category;
      option.textContent = `${row.category} (${row.items})`;
      $("category").append(option);
      const name = document.createElement("option");
      name.value = row.category;
      $("category-names").append(name);
    }
  } catch (error) {
    setStatus(error.message, "error");
  }
}

function setup() {
  $("photo-input").addEventListener("change", (event) => useFiles(event.target.files));
  $("add-photo-input").addEventListener("change", (event) => { useFiles(event.target.files, true); event.target.value = ""; });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    useFiles(event.dataTransfer.files);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("photo-input").click(); }
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) useFiles([file]);
  });
  $("filters").addEventListener("change", () => { if (state.lastQuery) search(state.lastQuery); });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("close-item").addEventListener("click", () => { $("item-view").hidden = true; });
  $("more-like-this").addEventListener("click", (event) => {
    $("item-view").hidden = true;
    search({ itemId: event.currentTarget.dataset.itemId });
  });
  $("query-image").addEventListener("error", () => {
    if (state.file) setStatus("Your browser cannot show this photo, but it can still be searched.", "");
  });
  $("catalogue-form").addEventListener("submit", addLot);
  setupCrop();
  loadCatalogInfo();
}

setup();
