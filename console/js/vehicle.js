// One vehicle: its devices' last positions on a map (GNSS and LBS fixes drawn differently, with
// their age), the track of a chosen day, its places, risk zones near it, recent alerts, and a
// "locate now" button per device that follows the command until the device answers.
// Panels whose endpoint this server lacks are hidden.

import { api, enc, maybe, Missing, ApiError } from './api.js';
import { fill, h } from './dom.js';
import { ago, code, t, when } from './i18n.js';
import { distanceM, fixMarker, fit, geometryCentre, geometryLayer, hasCoords, makeMap, placeLayer, trackLayer } from './map.js';
import { nextDay, startOf, today, zoneName } from './zone.js';

const NEAR_KM = 10;
const SLOW_EVERY = 12; // places change slowly: every 12th refresh (a minute)
const ZONES_EVERY_MS = 10 * 60 * 1000; // the whole zone list: tens of thousands of zones
const TRACK_LIMIT = 100000; // the API's most per request: a day at one fix a second fits
const FINAL = new Set(['answered', 'failed', 'expired']);

// The server's zones, fetched at most every ZONES_EVERY_MS while a page is open, and shared by
// the vehicle pages an officer opens one after another within ZONES_SHARED_MS (tens of
// thousands of zones are megabytes).
const ZONES_SHARED_MS = 60 * 1000;
let zoneList = null;
let zonesAt = 0;


export function vehiclePage(id, caps) {
  const can = {
    track: caps.has('GET', '/v1/devices/{}/track'),
    places: caps.has('GET', '/v1/vehicles/{}/places'),
    zones: caps.has('GET', '/v1/zones'),
    commands: caps.has('POST', '/v1/devices/{}/commands') && caps.has('GET', '/v1/commands/{}'),
  };
  const commands = new Map(); // device id -> the last locate command
  const track = new Map(); // device id -> the chosen day's positions so far
  const suspect = new Map(); // device id -> the times of the chosen day's suspect fixes, not drawn
  let trackDay = null;
  let recovered = false; // the devices' last locate commands were read back
  let recovering = false; // ... and a read of them is under way
  let zonesSeen = false; // this page has drawn the zone list once
  let map, fixes, tracks, places, zones, fence, cmdFixes;
  let fenceDrawn = null; // the geofence `fence` draws, as JSON: a changed one is drawn anew
  let els = {};
  let vehicle = null;
  let fitted = false;
  let day = today();
  let ticks = 0;
  let cmdTimer = null;
  let alive = true;

  function section(key, idAttr, ...body) {
    return h('section', { class: 'panel', id: idAttr }, h('h2', null, t(key)), ...body);
  }

  function head(v) {
    const loan = v.loan || {};
    const risk = v.risk;
    return [
      h('a', { href: '#/queue', class: 'back' }, t('vehicle.back')),
      h('h1', null, v.id, v.plate ? ` · ${v.plate}` : ''),
      h('p', { class: 'facts' },
        v.vin ? [h('span', null, `${t('vehicle.vin')} ${v.vin}`), ' '] : null,
        h('span', { class: `loan loan-${loan.status}` }, t(`loan.${loan.status}`)),
        loan.days_past_due ? ` ${t('vehicle.dpd', { n: loan.days_past_due })}` : '',
        loan.id ? ` (${loan.id})` : '',
        risk ? [' ', h('span', { class: `tier tier-${risk.tier}`, id: 'vehicle-tier' }, `${t(`tier.${risk.tier}`)} ${risk.score}`)] : null),
      risk && risk.reasons && risk.reasons.length
        ? h('ul', { class: 'reasons' }, risk.reasons.map((r) => h('li', null, `${code(r.code)} +${r.points}`)))
        : null,
    ];
  }

  function fixLabel(d) {
    const p = d.position;
    const kind = p.valid ? t('vehicle.fix_valid') : t('vehicle.fix_invalid');
    return `${d.id} · ${kind} · ${t('vehicle.fix_age', { age: ago(p.time) })}`;
  }

  function cellText(p) {
    const c = p.cell;
    const cell = c ? ` · ${t('vehicle.cell')} ${c.mcc}-${c.mnc}-${c.lac}-${c.cid}` : '';
    return `${t('vehicle.no_coords')}${cell}`;
  }

  function commandText(c) {
    if (!c) return '';
    if (c.unsupported) return t('locate.unsupported');
    if (c.error) return c.error;
    const parts = [t(`locate.${c.state}`)];
    if (c.lookError) parts.push(` (${t('locate.look_failed', { msg: c.lookError })})`);
    if (c.answer) parts.push(`: ${c.answer}`);
    if (c.answered_at) parts.push(` (${when(c.answered_at)})`);
    return parts.join('');
  }

  function deviceRow(d) {
    const p = d.position;
    const c = commands.get(d.id);
    const button = can.commands && !(c && c.unsupported)
      ? h('button', { type: 'button', class: 'locate', dataset: { device: d.id },
          disabled: Boolean(c && c.state && !FINAL.has(c.state)), onclick: () => locate(d.id) }, t('locate.button'))
      : null;
    return h('div', { class: 'device', dataset: { device: d.id } },
      h('div', { class: 'device-id' }, h('strong', null, d.id), ' ',
        h('span', { class: 'muted' }, `${code(d.kind)} ${d.protocol || ''}`)),
      h('div', null, p
        ? [h('span', { class: p.valid ? 'fix-valid' : 'fix-invalid' }, p.valid ? t('vehicle.fix_valid') : t('vehicle.fix_invalid')),
          ' · ', h('span', { title: p.time }, t('vehicle.fix_age', { age: ago(p.time) })),
          hasCoords(p) ? null : [' · ', h('span', { class: 'muted' }, cellText(p))],
          d.last_valid_position
            ? [' · ', h('span', { class: 'fix-valid last-valid', title: d.last_valid_position.time },
              t('vehicle.last_valid', { age: ago(d.last_valid_position.time) }))]
            : null]
        : h('span', { class: 'muted' }, t('vehicle.no_position')),
        ' · ', h('span', { class: 'muted', title: d.last_seen || '' }, t('vehicle.seen', { age: ago(d.last_seen) }))),
      button || c ? h('div', { class: 'device-command' }, button,
        h('span', { class: 'command-state', dataset: { device: d.id, state: c ? c.state || '' : '' } }, commandText(c))) : null,
    );
  }

  function drawFixes(v) {
    fixes.clearLayers();
    let slot = 0;
    for (const d of v.devices || []) {
      if (hasCoords(d.position)) fixes.addLayer(fixMarker(d.position, fixLabel(d), true, slot++));
      // The last-known position has no fix: where the device last really saw the car, too.
      const lv = d.last_valid_position;
      if (hasCoords(lv)) fixes.addLayer(fixMarker(lv, `${d.id} · ${t('vehicle.last_valid', { age: ago(lv.time) })}`, true, slot++));
    }
    cmdFixes.clearLayers();
    for (const [dev, c] of commands) {
      if (hasCoords(c.position)) cmdFixes.addLayer(fixMarker(c.position, `${dev} · ${t('locate.answered')} · ${ago(c.position.time)}`, false));
    }
  }

  /// The chosen day's track: read whole when the day changes (and on slow ticks, for late
  /// uploads), and for today only what came since the last fix on the other polls.
  async function loadTrack(slow) {
    if (!can.track || !vehicle) return;
    if (trackDay !== day) {
      track.clear();
      suspect.clear();
      trackDay = day;
      // Off the map at once: a read of the new day that fails must not leave the old day's
      // track drawn under the new date.
      tracks.clearLayers();
      els.trackInfo.textContent = t('loading');
    }
    const asked = day;
    // The day in the lender's zone, as places count nights.
    const from = startOf(day);
    const to = startOf(nextDay(day));
    const live = day === today();
    let truncated = false;
    let anyEndpoint = false;
    for (const d of vehicle.devices || []) {
      // One request per device, in turn: a vehicle has one to three.
      const have = track.get(d.id);
      if (have && !live && !slow) continue;
      const last = have && !slow && have.length ? have[have.length - 1] : null;
      const since = last ? new Date(Date.parse(last.time) + 1) : from;
      const range = `from=${enc(since.toISOString())}&to=${enc(to.toISOString())}&limit=${TRACK_LIMIT}`;
      let data;
      try {
        data = await api(`/v1/devices/${enc(d.id)}/track?${range}`);
        anyEndpoint = true;
      } catch (e) {
        if (e instanceof Missing) {
          if (e.status === 405) can.track = false;
          continue;
        }
        throw e;
      }
      // The day was changed while this answer was on its way: it belongs to the old one.
      if (!alive || trackDay !== asked) return;
      const all = (data && data.positions) || [];
      if (all.length >= TRACK_LIMIT) truncated = true;
      // A fix the server marks suspect (dated in the future) is no place the car went, and as
      // the newest fix it would make every later read start after it.
      const got = all.filter((p) => !p.suspect);
      // A suspect fix lies after the last trusted one, so each read since it brings it again.
      const odd = (last && suspect.get(d.id)) || new Set();
      for (const p of all) if (p.suspect) odd.add(p.time);
      suspect.set(d.id, odd);
      track.set(d.id, last ? have.concat(got) : got);
    }
    if (!alive) return;
    tracks.clearLayers();
    let n = 0;
    for (const [i, d] of (vehicle.devices || []).entries()) {
      const ps = (track.get(d.id) || []).filter(hasCoords);
      n += ps.length;
      if (ps.length) tracks.addLayer(trackLayer(ps, i));
    }
    const odd = [...suspect.values()].reduce((n, times) => n + times.size, 0);
    els.trackInfo.textContent = (n ? t('vehicle.track_points', { n }) : t('vehicle.track_none'))
      + (odd ? ` ${t('vehicle.track_suspect', { n: odd })}` : '')
      + (truncated ? ` ${t('vehicle.track_truncated', { n: TRACK_LIMIT })}` : '');
    if (!can.track) els.track.hidden = true;
    else if (anyEndpoint) els.track.hidden = false;
  }

  async function loadPlaces() {
    if (!can.places) return;
    const data = await maybe(`/v1/vehicles/${enc(id)}/places?days=30`);
    if (!alive) return;
    places.clearLayers();
    if (!data) {
      els.places.hidden = true;
      return;
    }
    els.places.hidden = false;
    const list = data.places || [];
    for (const p of list) {
      const kind = p.kind === 'night' ? t('vehicle.place_night') : t('vehicle.place_day');
      places.addLayer(placeLayer(p, t('vehicle.place_line', { kind, dwell: p.dwell_hours, visits: p.visits })));
    }
    fill(els.placeList,
      list.length === 0 ? h('li', { class: 'muted' }, t('vehicle.places_none')) : null,
      list.slice(0, 8).map((p) => h('li', { class: `place-${p.kind}` },
        t('vehicle.place_line', { kind: p.kind === 'night' ? t('vehicle.place_night') : t('vehicle.place_day'), dwell: p.dwell_hours, visits: p.visits }),
        ` · ${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}`)),
      data.last_stop ? h('li', null, t('vehicle.last_stop', { since: when(data.last_stop.since), dwell: data.last_stop.dwell_hours })) : null);
  }

  async function loadZones() {
    if (!can.zones || !vehicle) return;
    const maxAge = zonesSeen ? ZONES_EVERY_MS : ZONES_SHARED_MS;
    if (!zoneList || Date.now() - zonesAt >= maxAge) {
      const data = await maybe('/v1/zones');
      if (!alive) return;
      if (!data) {
        els.zones.hidden = true;
        return;
      }
      zoneList = data.zones || [];
      zonesAt = Date.now();
    }
    zonesSeen = true;
    zones.clearLayers();
    els.zones.hidden = false;
    const spots = (vehicle.devices || []).flatMap((d) => [d.position, d.last_valid_position]).filter(hasCoords);
    const near = [];
    for (const z of zoneList) {
      const c = geometryCentre(z.geometry);
      if (!c) continue;
      const dist = Math.min(...spots.map((s) => Math.max(0, distanceM(s, c) - c.r)));
      if (dist <= NEAR_KM * 1000) near.push([dist, z]);
    }
    near.sort((a, b) => a[0] - b[0]);
    for (const [, z] of near) {
      const l = geometryLayer(z.geometry, { color: '#b00020', weight: 2, fillOpacity: 0.15, className: 'lw-zone' });
      if (l) zones.addLayer(l.bindTooltip(h('span', null, `${z.name || z.id || z.zone_id} · ${code(z.kind)}`)));
    }
    fill(els.zoneList, near.length === 0
      ? h('li', { class: 'muted' }, t('vehicle.zones_none', { km: NEAR_KM }))
      : near.slice(0, 10).map(([dist, z]) => h('li', null, `${z.name || z.id || z.zone_id} · ${code(z.kind)} · ${(dist / 1000).toFixed(1)} km`)));
  }

  async function loadAlerts() {
    // Filtered by the server where it can; else among the newest 200 of all vehicles.
    const byVehicle = caps.param('GET', '/v1/alerts', 'vehicle_id');
    const data = await api(byVehicle ? `/v1/alerts?limit=10&vehicle_id=${enc(id)}` : '/v1/alerts?limit=200');
    if (!alive) return;
    const mine = (data.alerts || []).filter((a) => a.vehicle_id === id).slice(0, 10);
    fill(els.alertList, mine.length === 0
      ? h('li', { class: 'muted' }, t('vehicle.alerts_none'))
      : mine.map((a) => h('li', null, h('strong', null, code(a.type)), ` · ${a.device_id || ''} · `, h('span', { title: a.detected_at }, when(a.detected_at)))));
  }

  async function locate(dev) {
    commands.set(dev, { state: 'queued' });
    renderDevices();
    try {
      const c = await api(`/v1/devices/${enc(dev)}/commands`, { method: 'POST', body: { type: 'locate' } });
      commands.set(dev, c);
    } catch (e) {
      if (e instanceof Missing && e.status === 405) can.commands = false;
      if (e instanceof Missing && e.status === 404) commands.set(dev, { error: t('locate.never_seen') });
      else if (e instanceof Missing || (e instanceof ApiError && e.status === 422)) commands.set(dev, { unsupported: true });
      else commands.set(dev, { error: e.message });
    }
    renderDevices();
    followCommands();
  }

  /// Each device's newest locate command, from the server: the page may be new (a reload, a
  /// language switch, back from another page) while one is on its way, or has its answer.
  async function recoverCommands() {
    if (recovered || recovering || !can.commands || !vehicle) return;
    // Done only once every device was read: a failed read (a blip, a restart) is tried again
    // at the next poll, lest a locate on its way go unseen and be pressed again.
    recovering = true;
    try {
      for (const d of vehicle.devices || []) {
        if (commands.has(d.id)) continue;
        const data = await maybe(`/v1/devices/${enc(d.id)}/commands`);
        if (!alive) return;
        const last = ((data && data.commands) || []).find((c) => c.type === 'locate');
        if (last && !commands.has(d.id)) commands.set(d.id, last);
      }
      recovered = true;
    } finally {
      recovering = false;
    }
    renderDevices();
    drawFixes(vehicle);
  }

  /// While a command is on its way, its state is polled every second; a failed look says so
  /// and the next one tries again.
  function followCommands() {
    if (cmdTimer || !alive) return;
    const pending = [...commands.entries()].filter(([, c]) => c.id && !FINAL.has(c.state));
    if (pending.length === 0) return;
    cmdTimer = setTimeout(async () => {
      cmdTimer = null;
      for (const [dev, c] of pending) {
        try {
          const next = await maybe(`/v1/commands/${enc(c.id)}`);
          if (next && alive) commands.set(dev, next);
          else if (alive) commands.set(dev, { error: t('locate.gone') });
        } catch (e) {
          if (alive) commands.set(dev, { ...c, lookError: e.message });
        }
      }
      if (!alive) return;
      renderDevices();
      if (vehicle) drawFixes(vehicle);
      followCommands();
    }, 1000);
  }

  /// Draws the vehicle's geofence, again when it changed, and removes it when it is gone.
  function drawFence(geofence) {
    const json = geofence ? JSON.stringify(geofence) : null;
    if (json === fenceDrawn) return;
    if (fence) fence.remove();
    fence = null;
    fenceDrawn = json;
    if (!geofence) return;
    fence = geometryLayer(geofence, { color: '#2e7d32', weight: 2, dashArray: '6 4', fill: false, className: 'lw-geofence' });
    if (fence) fence.addTo(map).bindTooltip(t('vehicle.geofence'));
  }

  /// The vehicle is not there: its page keeps nothing of what it showed.
  function forget() {
    vehicle = null;
    if (cmdTimer) clearTimeout(cmdTimer);
    cmdTimer = null;
    els.body.hidden = true;
    for (const layer of [fixes, tracks, places, zones, cmdFixes]) layer.clearLayers();
    drawFence(null);
    track.clear();
    suspect.clear();
    trackDay = null;
    commands.clear();
    recovered = false;
    fitted = false;
    fill(els.devices);
    fill(els.alertList);
  }

  function renderDevices() {
    if (!vehicle) return;
    fill(els.devices, (vehicle.devices || []).map(deviceRow));
  }

  return {
    mount(el) {
      els.head = h('div', { class: 'vhead', id: 'vehicle-head' }, h('p', { class: 'muted' }, t('loading')));
      els.map = h('div', { class: 'map', id: 'vehicle-map' });
      els.devices = h('div', { id: 'devices' });
      els.dayInput = h('input', { type: 'date', id: 'track-day', value: day, max: today(),
        onchange: (e) => {
          day = e.target.value || today();
          const asked = day;
          loadTrack(true).then(() => fit(map, [tracks, fixes]))
            // Only for the day still chosen: a late failure of another must not overwrite it.
            .catch(() => { if (day === asked) els.trackInfo.textContent = t('vehicle.track_failed'); });
        } });
      els.trackInfo = h('span', { class: 'muted', id: 'track-info' });
      els.track = section('vehicle.track', 'panel-track', h('label', null, t('vehicle.track_day'), ' ', els.dayInput, ' ', h('span', { class: 'muted', id: 'track-zone' }, zoneName())), ' ', els.trackInfo);
      els.track.hidden = !can.track;
      els.placeList = h('ul', { id: 'places' });
      els.places = section('vehicle.places', 'panel-places', els.placeList);
      els.places.hidden = true;
      els.zoneList = h('ul', { id: 'zones-near' });
      els.zones = section('vehicle.zones', 'panel-zones', els.zoneList);
      els.zones.hidden = true;
      els.alertList = h('ul', { id: 'vehicle-alerts' });
      // Hidden until the vehicle is read: an unknown id shows its message alone.
      els.body = h('div', { class: 'vbody', id: 'vehicle-body', hidden: true },
        els.map,
        h('aside', null,
          section('vehicle.devices', 'panel-devices', els.devices),
          els.track, els.places, els.zones,
          section('vehicle.alerts', 'panel-alerts', els.alertList)));
      fill(el, h('div', { class: 'vehicle', id: 'vehicle', dataset: { vehicleId: id } }, els.head, els.body));
      map = makeMap(els.map);
      zones = L.featureGroup().addTo(map);
      places = L.featureGroup().addTo(map);
      tracks = L.featureGroup().addTo(map);
      fixes = L.featureGroup().addTo(map);
      cmdFixes = L.featureGroup().addTo(map);
    },

    async refresh() {
      const v = await maybe(`/v1/vehicles/${enc(id)}`);
      if (!alive) return;
      if (!v) {
        // Deleted while open (or never there): nothing of it stays on screen, least of all a
        // "locate now" for its trackers. If it is put back, the next poll draws it anew.
        fill(els.head, h('a', { href: '#/queue', class: 'back' }, t('vehicle.back')), h('p', { class: 'error' }, t('vehicle.not_found')));
        forget();
        return;
      }
      const back = !vehicle;
      vehicle = v;
      els.body.hidden = false;
      fill(els.head, head(v));
      renderDevices();
      drawFixes(v);
      drawFence(v.geofence);
      const slow = back || ticks % SLOW_EVERY === 0;
      ticks += 1;
      // Each panel on its own: one that fails (its error is shown) does not keep the others, or
      // the map's view of the car, from being drawn.
      const done = await Promise.allSettled([
        loadTrack(slow),
        loadAlerts(),
        recoverCommands(),
        slow ? loadPlaces() : null,
        slow ? loadZones() : null,
      ]);
      if (!alive) return;
      map.invalidateSize();
      if (!fitted) fitted = fit(map, [fixes, tracks, places]);
      followCommands();
      const failed = done.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    },

    destroy() {
      alive = false;
      if (cmdTimer) clearTimeout(cmdTimer);
      if (map) map.remove();
    },
  };
}
