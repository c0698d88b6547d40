// Leaflet maps on the configured background (or none): positions, tracks, places, zones and
// geofences, shifted to GCJ-02 when the tiles are Chinese (`[console] tile_crs = "gcj02"`).

import { wgs84ToGcj02 } from './gcj02.js';
import { h } from './dom.js';

let cfg = { tile_url: '', tile_crs: 'wgs84', tile_attribution: '' };

export function configure(c) {
  cfg = Object.assign(cfg, c || {});
}

/// A WGS-84 position as the map's tiles place it.
export function ll(lat, lon) {
  return cfg.tile_crs === 'gcj02' ? wgs84ToGcj02(lat, lon) : [lat, lon];
}

export function makeMap(el) {
  const map = L.map(el, { zoomControl: true, worldCopyJump: true });
  if (cfg.tile_url) {
    L.tileLayer(cfg.tile_url, {
      maxZoom: 19,
      attribution: cfg.tile_attribution ? escapeText(cfg.tile_attribution) : '',
    }).addTo(map);
  }
  L.control.scale({ imperial: false }).addTo(map);
  map.setView([35, 105], 4);
  return map;
}

// Leaflet sets attribution as HTML; the configured credit is text.
function escapeText(s) {
  const d = document.createElement('div');
  d.textContent = s;
  return d.innerHTML;
}

/// Whether a position has coordinates to draw: a cell-only (LBS) report carries none, and 0/0
/// is how trackers say "no fix".
export function hasCoords(p) {
  return Boolean(p) && Number.isFinite(p.lat) && Number.isFinite(p.lon) && !(p.lat === 0 && p.lon === 0);
}

/// A device's last position (its label shown always, or on hover): a filled dot for a GNSS fix, a dashed ring (with a rough area)
/// for an LBS or otherwise invalid fix.
// Sides for the labels of one map's markers in turn: a car's trackers side by side would
// otherwise write their labels over each other.
const SIDES = [['right', [10, 0]], ['left', [-10, 0]], ['top', [0, -10]], ['bottom', [0, 10]]];

/// A fix's marker with its label; `slot` picks the label's side (see `SIDES`).
export function fixMarker(p, label, permanent = true, slot = 0) {
  const at = ll(p.lat, p.lon);
  const tip = h('span', null, label);
  const [direction, offset] = SIDES[slot % SIDES.length];
  const tipOpts = { permanent, direction, offset };
  if (p.valid) {
    return L.circleMarker(at, {
      radius: 9, weight: 2, color: '#0b4f8a', fillColor: '#1f7ae0', fillOpacity: 0.9,
      className: 'lw-fix lw-fix-valid',
    }).bindTooltip(tip, tipOpts);
  }
  return L.featureGroup([
    L.circle(at, {
      radius: 500, weight: 1, dashArray: '4 4', color: '#a15c00', fillOpacity: 0.06,
      className: 'lw-fix-area', interactive: false,
    }),
    L.circleMarker(at, {
      radius: 8, weight: 2, dashArray: '3 3', color: '#a15c00', fill: true, fillColor: '#fff',
      fillOpacity: 0.8, className: 'lw-fix lw-fix-invalid',
    }).bindTooltip(tip, tipOpts),
  ]);
}

const TRACK_COLOURS = ['#d62728', '#9467bd', '#2ca02c', '#ff7f0e'];

/// One device's track: a line through its fixes, with a ring at the start.
export function trackLayer(positions, i) {
  const pts = positions.filter(hasCoords).map((p) => ll(p.lat, p.lon));
  const colour = TRACK_COLOURS[i % TRACK_COLOURS.length];
  const layers = [L.polyline(pts, { color: colour, weight: 3, opacity: 0.85, className: 'lw-track' })];
  if (pts.length > 0) {
    layers.push(L.circleMarker(pts[0], { radius: 4, color: colour, fillColor: '#fff', fillOpacity: 1, className: 'lw-track-start' }));
  }
  return L.featureGroup(layers);
}

export function placeLayer(pl, label) {
  return L.circle(ll(pl.lat, pl.lon), {
    radius: Math.max(pl.radius_m || 50, 30),
    color: pl.kind === 'night' ? '#3b3b98' : '#c7a600',
    weight: 2, fillOpacity: 0.2,
    className: `lw-place lw-place-${pl.kind === 'night' ? 'night' : 'day'}`,
  }).bindTooltip(h('span', null, label));
}

/// A geofence or a risk zone: GeoJSON Polygon / MultiPolygon (lon, lat) or lienwatch's Circle.
export function geometryLayer(g, style) {
  if (!g || typeof g !== 'object') return null;
  const ring = (r) => r.map(([lon, lat]) => ll(lat, lon));
  switch (g.type) {
    case 'Circle':
      return L.circle(ll(g.center[1], g.center[0]), Object.assign({ radius: g.radius_m }, style));
    case 'Polygon':
      return L.polygon(g.coordinates.map(ring), style);
    case 'MultiPolygon':
      return L.polygon(g.coordinates.map((poly) => poly.map(ring)), style);
    default:
      return null;
  }
}

/// A point inside or on a geometry, for "is this zone near the car" (the circle's centre or the
/// first vertex's bounding-box centre is close enough for a list of nearby zones).
export function geometryCentre(g) {
  if (!g) return null;
  if (g.type === 'Circle') return { lat: g.center[1], lon: g.center[0], r: g.radius_m || 0 };
  const rings = g.type === 'Polygon' ? [g.coordinates[0]] : g.type === 'MultiPolygon' ? g.coordinates.map((p) => p[0]) : [];
  let minLat = 90, maxLat = -90, minLon = 180, maxLon = -180;
  for (const r of rings) {
    for (const [lon, lat] of r) {
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
      minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
    }
  }
  if (minLat > maxLat) return null;
  const c = { lat: (minLat + maxLat) / 2, lon: (minLon + maxLon) / 2 };
  c.r = distanceM(c, { lat: maxLat, lon: maxLon });
  return c;
}

export function distanceM(a, b) {
  const R = 6371008.8;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const s = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.min(1, Math.sqrt(s)));
}

/// Shows everything in `layers` (once: later refreshes keep the officer's view).
export function fit(map, layers) {
  const b = L.latLngBounds([]);
  for (const l of layers) extend(b, l);
  if (!b.isValid()) return false;
  map.fitBounds(b, { padding: [40, 40], maxZoom: 16 });
  return true;
}

function extend(b, l) {
  if (!l) return;
  if (l.getBounds) b.extend(l.getBounds());
  else if (l.getLatLng) b.extend(l.getLatLng());
  else if (l.getLayers) for (const x of l.getLayers()) extend(b, x);
}
