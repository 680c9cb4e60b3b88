// The voice studio: plain JavaScript, no build step. Every address is relative, so the page works
// at / and behind Home Assistant's ingress.
"use strict";

const state = { voices: [], selected: null, meta: null, audio: null, takes: 0 };
const $ = (selector, root = document) => root.querySelector(selector);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = body.error.message;
    } catch (err) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function speechText(voice) {
  const source = voice.source;
  if (source.kind === "upstream") return `upstream ${source.uri}${source.voice ? ` (${source.voice})` : ""}`;
  const models = source.models.length ? `models ${source.models.join(" + ")}` : `preset ${source.preset}`;
  return `WhisperSpeech, ${models}${source.speaker ? ", own speaker" : ""}`;
}

function rvcText(voice) {
  const rvc = voice.rvc;
  if (!rvc) return voice.settings.rvc ? "not loaded yet" : "none";
  return `${rvc.version} · ${rvc.vocoder} · ${rvc.rate / 1000} kHz · ${rvc.embedder}${rvc.index ? " · index" : ""}`;
}

function speedText(voice) {
  if (!voice.speed) return "–";
  return voice.speed.text;
}

async function refresh() {
  const body = await (await api("api/voices")).json();
  state.meta = body;
  state.voices = body.voices;
  const rows = $("#voices tbody");
  rows.replaceChildren(...body.voices.map((voice) => element("tr", { dataset: { voice: voice.name } },
    element("td", {}, element("strong", {}, voice.name), element("br"),
      element("span", { class: "muted" }, voice.description + (voice.default ? " · default" : ""))),
    element("td", {}, voice.languages.join(", ")),
    element("td", {}, speechText(voice)),
    element("td", {}, rvcText(voice)),
    element("td", {}, speedText(voice)),
    element("td", { class: voice.problem ? "warn" : "" }, voice.state, ...(voice.problem ? [element("br"), element("small", {}, voice.problem)] : [])),
    element("td", { class: "actions" },
      element("button", { type: "button", class: "tune", onclick: () => select(voice.name) }, "Tune"),
      ...(body.editable ? [element("button", { type: "button", class: "remove quiet", onclick: () => remove(voice.name) }, "Remove")] : [])),
  )));
  $("#problems").replaceChildren(...body.problems.map((p) => element("p", { class: "warn" }, `${p.file}: ${p.error}`)));
  $("#loading").replaceChildren(...body.loading.map((l) => element("p", {}, `Loading ${l.voice} (${l.file}): ${l.step}… ${l.seconds} s`)));
  $("#server-state").textContent = `${body.voices.length} voice(s)` + (body.editable ? "" : " · read-only: start with --voices FOLDER to change voices");
  $("#add-section").hidden = !body.editable;
  $("#save").hidden = !body.editable;
  for (const select of document.querySelectorAll("select[name=f0_method]")) {
    if (!select.options.length) select.append(...body.f0_methods.map((m) => element("option", { value: m }, m)));
  }
  const sources = $("select[name=source]");
  const chosen = sources.value;
  for (const option of [...sources.options]) if (option.value.startsWith("like:")) option.remove();
  sources.append(...body.voices.map((v) => element("option", { value: `like:${v.name}` }, `as voice ${v.name} speaks (${speechText(v)})`)));
  if ([...sources.options].some((o) => o.value === chosen)) sources.value = chosen;
  const presets = $("select[name=preset]");
  if (!presets.options.length) presets.append(...body.presets.map((p) => element("option", { value: p }, p)));
  presets.value = presets.value || "fast";
  if (state.selected && !body.voices.some((v) => v.name === state.selected)) {
    state.selected = null;
    $("#tune-section").hidden = true;
  }
}

function voice(name) {
  return state.voices.find((v) => v.name === name);
}

function fill(settings) {
  for (const input of $("#tune").querySelectorAll("[name]")) {
    const section = input.dataset.section;
    const values = section ? settings[section] || {} : settings;
    if (values[input.name] !== undefined) input.value = values[input.name];
    show(input);
  }
}

function show(input) {
  const out = $(`output[data-for="${input.name}"]`);
  if (out) out.textContent = input.value;
}

function select(name) {
  const chosen = voice(name);
  state.selected = name;
  $("#tune-section").hidden = false;
  $("#tune-name").textContent = chosen.name;
  $("#rvc-fields").hidden = !chosen.settings.rvc;
  $("#rate-field").hidden = chosen.source.kind !== "whisperspeech";
  fill(chosen.settings);
  $("#tune-status").textContent = "";
  $("#tune-section").scrollIntoView({ block: "nearest" });
}

function settings() {
  const chosen = voice(state.selected);
  const result = {};
  for (const input of $("#tune").querySelectorAll("[name]")) {
    if (input.closest("[hidden]")) continue;
    const section = input.dataset.section;
    if (section && !chosen.settings[section]) continue;
    const value = input.type === "range" ? Number(input.value) : input.value;
    if (section) (result[section] = result[section] || {})[input.name] = value;
    else result[input.name] = value;
  }
  return result;
}

function describe(s) {
  const parts = [];
  if (s.rvc) parts.push(`pitch ${s.rvc.pitch_shift}`, `index ${s.rvc.index_rate}`, `protect ${s.rvc.protect}`, `rms ${s.rvc.rms_mix_rate}`, s.rvc.f0_method);
  if (s.whisperspeech) parts.push(`rate ${s.whisperspeech.speaking_rate}`);
  parts.push(`pause ${s.sentence_pause}`);
  return parts.join(" · ");
}

function wav(parts, rate) {
  const samples = parts.reduce((n, p) => n + p.length, 0);
  const buffer = new ArrayBuffer(44 + samples * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples * 2, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples * 2, true);
  let offset = 44;
  for (const part of parts) {
    new Int16Array(buffer, offset, part.length).set(part);
    offset += part.length * 2;
  }
  return new Blob([buffer], { type: "audio/wav" });
}

// Plays the answer as it streams: each piece of PCM is scheduled right after the one before.
async function speak() {
  const status = $("#tune-status");
  const button = $("#speak");
  const chosen = state.selected;
  const used = settings();
  button.disabled = true;
  status.textContent = "speaking…";
  const started = performance.now();
  try {
    const response = await api("api/speak", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ voice: chosen, text: $("#text").value, settings: used }),
    });
    const rate = Number(response.headers.get("X-Sample-Rate"));
    state.audio = state.audio || new AudioContext();
    const audio = state.audio;
    await audio.resume();
    let next = audio.currentTime + 0.05;
    let first = null;
    let samples = 0;
    let scheduled = 0;
    let carry = new Uint8Array(0);
    const parts = [];
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const bytes = new Uint8Array(carry.length + value.length);
      bytes.set(carry); bytes.set(value, carry.length);
      const even = bytes.length - (bytes.length % 2);
      carry = bytes.slice(even);
      if (!even) continue;
      const pcm = new Int16Array(bytes.buffer.slice(0, even));
      if (first === null) {
        first = performance.now() - started;
        status.textContent = `first audio after ${(first / 1000).toFixed(2)} s…`;
      }
      const buffer = audio.createBuffer(1, pcm.length, rate);
      const channel = buffer.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 32768;
      const source = audio.createBufferSource();
      source.buffer = buffer;
      source.connect(audio.destination);
      next = Math.max(next, audio.currentTime);
      source.start(next);
      next += buffer.duration;
      scheduled += buffer.duration;
      samples += pcm.length;
      parts.push(pcm);
    }
    const seconds = samples / rate;
    const total = (performance.now() - started) / 1000;
    status.textContent = `first audio after ${((first ?? 0) / 1000).toFixed(2)} s · ${seconds.toFixed(2)} s of audio in ${total.toFixed(2)} s`;
    addTake({ voice: chosen, settings: used, first, seconds, samples, rate, scheduled, blob: wav(parts, rate) });
  } catch (err) {
    status.textContent = `Could not speak: ${err.message}`;
    status.classList.add("warn");
    setTimeout(() => status.classList.remove("warn"), 4000);
  } finally {
    button.disabled = false;
  }
}

function addTake(take) {
  state.takes += 1;
  const item = element("li", {
    class: "take",
    dataset: {
      voice: take.voice, samples: String(take.samples), rate: String(take.rate),
      seconds: take.seconds.toFixed(4), scheduled: take.scheduled.toFixed(4),
      first: String(Math.round(take.first ?? -1)), settings: JSON.stringify(take.settings),
    },
  },
  element("div", {}, element("strong", {}, `#${state.takes} ${take.voice}`), ` · first audio ${((take.first ?? 0) / 1000).toFixed(2)} s · ${take.seconds.toFixed(2)} s`),
  element("div", { class: "muted" }, describe(take.settings)),
  element("audio", { controls: "", src: URL.createObjectURL(take.blob), preload: "auto" }),
  element("button", { type: "button", class: "quiet", onclick: () => { fill(take.settings); } }, "Use these settings"));
  $("#takes").prepend(item);
}

async function save() {
  const status = $("#tune-status");
  try {
    await api(`api/voices/${encodeURIComponent(state.selected)}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ settings: settings() }),
    });
    status.textContent = "Saved: Wyoming clients get these settings from now on.";
    await refresh();
  } catch (err) {
    status.textContent = `Not saved: ${err.message}`;
  }
}

async function remove(name) {
  if (!confirm(`Remove the voice ${name}? Its profile file goes (and the files the studio stored for it).`)) return;
  try {
    await api(`api/voices/${encodeURIComponent(name)}`, { method: "DELETE" });
  } catch (err) {
    alert(`Not removed: ${err.message}`);
  }
  await refresh();
}

function profileFields(form) {
  const data = new FormData(form);
  const profile = {
    name: data.get("name"),
    languages: String(data.get("languages")).split(/[\s,]+/).filter(Boolean),
    rvc: {
      pitch_shift: Number(data.get("pitch_shift")),
      f0_method: data.get("f0_method"),
      index_rate: Number(data.get("index_rate")),
    },
  };
  if (data.get("description")) profile.description = data.get("description");
  const source = String(data.get("source"));
  if (source.startsWith("like:")) {
    profile.speech_from = source.slice(5);
  } else if (source === "upstream") {
    profile.upstream = { uri: data.get("uri") };
    if (data.get("upstream_voice")) profile.upstream.voice = data.get("upstream_voice");
  } else {
    profile.whisperspeech = { preset: data.get("preset") };
  }
  return profile;
}

async function add(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("#add-status");
  const body = new FormData();
  body.append("profile", JSON.stringify(profileFields(form)));
  for (const name of ["model", "index", "speaker"]) {
    const input = form.elements[name];
    if (input.files.length && !input.closest("[hidden]")) body.append(name, input.files[0]);
  }
  $("#add-button").disabled = true;
  status.classList.remove("warn");
  status.textContent = "uploading…";
  try {
    let job = await (await api("api/voices", { method: "POST", body })).json();
    while (job.state === "running") {
      status.textContent = `${job.voice}: ${job.step}… ${job.seconds.toFixed(0)} s`;
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await (await api(`api/jobs/${job.id}`)).json();
    }
    if (job.state === "failed") throw new Error(job.error);
    status.textContent = `Added ${job.voice} (${job.step}).`;
    form.reset();
    await refresh();
    select(job.voice);
  } catch (err) {
    status.textContent = `Not added: ${err.message}`;
    status.classList.add("warn");
  } finally {
    $("#add-button").disabled = false;
  }
}

function sourceChanged() {
  const source = $("select[name=source]").value;
  const upstream = source === "upstream";
  for (const node of document.querySelectorAll(".up-only")) node.hidden = !upstream;
  for (const node of document.querySelectorAll(".preset-only")) node.hidden = source !== "whisperspeech";
  const like = source.startsWith("like:") ? voice(source.slice(5)) : null;
  const speaks = source === "whisperspeech" || (like && like.source.kind === "whisperspeech");
  for (const node of document.querySelectorAll(".speaker-field")) node.hidden = !speaks;
  $("input[name=uri]").required = upstream;
}

document.addEventListener("DOMContentLoaded", () => {
  $("#speak").addEventListener("click", speak);
  $("#save").addEventListener("click", save);
  $("#revert").addEventListener("click", () => fill(voice(state.selected).settings));
  $("#add").addEventListener("submit", add);
  $("select[name=source]").addEventListener("change", sourceChanged);
  for (const input of $("#tune").querySelectorAll("input[type=range]")) input.addEventListener("input", () => show(input));
  refresh().catch((err) => { $("#server-state").textContent = `Cannot reach the server: ${err.message}`; });
  setInterval(() => refresh().catch(() => {}), 5000);
});
