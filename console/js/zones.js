// Every risk zone on one map, with a list. A lender keeps tens of thousands of zones and they
// change seldom: the list is fetched when the page opens, every few minutes after, and when the
// officer asks (the Reload button), not at every poll of the page.

import { api, maybe } from './api.js';
import { fill, h } from './dom.js';
import { code, t } from './i18n.js';
import { fit, geometryLayer, makeMap } from './map.js';

const RELOAD_MS = 5 * 60 * 1000;
const ROWS = 500; // list rows per page; the map shows every zone

export function zonesPage(caps) {
  let map, layer, list, note, canvas, reloadButton, prev, next, count;
  let zones = [];
  let first = 0; // the list's first row shown
  let fitted = false;
  let alive = true;
  let loadedAt = null;

  /// One page of the list, and where it is in the whole.
  function rows() {
    if (first >= zones.length) first = Math.max(0, Math.floor((zones.length - 1) / ROWS) * ROWS);
    const shown = zones.slice(first, first + ROWS);
    fill(list, zones.length === 0
      ? h('tr', null, h('td', { colspan: 3, class: 'muted' }, t('zones.none')))
      : shown.map((z) => h('tr', null, h('td', null, z.name || ''), h('td', null, code(z.kind)), h('td', null, z.id || z.zone_id || ''))));
    prev.hidden = first === 0;
    next.hidden = first + ROWS >= zones.length;
    count.textContent = zones.length > ROWS
      ? t('zones.range', { from: first + 1, to: first + shown.length, n: zones.length })
      : '';
  }

  return {
    mount(el) {
      note = h('p', { class: 'muted', id: 'zones-note', hidden: true }, t('zones.unavailable'));
      list = h('tbody', { id: 'zone-rows' });
      const mapEl = h('div', { class: 'map', id: 'zones-map' });
      reloadButton = h('button', { type: 'button', id: 'zones-reload',
        onclick: () => { loadedAt = null; this.refresh().catch(() => {}); } }, t('zones.reload'));
      prev = h('button', { type: 'button', id: 'zones-prev', hidden: true,
        onclick: () => { first = Math.max(0, first - ROWS); rows(); } }, t('queue.prev'));
      next = h('button', { type: 'button', id: 'zones-next', hidden: true,
        onclick: () => { first += ROWS; rows(); } }, t('queue.next'));
      count = h('span', { class: 'muted', id: 'zones-count' });
      fill(el, h('section', { class: 'zones' },
        h('h1', null, t('zones.title')),
        h('div', { class: 'filters pager' }, reloadButton),
        note,
        mapEl,
        h('table', { class: 'grid' },
          h('thead', null, h('tr', null, h('th', null, t('zones.name')), h('th', null, t('zones.kind')), h('th', null, 'id'))),
          list),
        h('div', { class: 'pager' }, prev, ' ', count, ' ', next)));
      map = makeMap(mapEl);
      layer = L.featureGroup().addTo(map);
    },

    async refresh() {
      if (loadedAt !== null && Date.now() - loadedAt < RELOAD_MS) {
        // The list is not read again yet; the smallest authenticated read tells the page at the
        // next poll, as on every other page, that its token was revoked.
        await api('/v1/alerts?limit=1');
        return;
      }
      const data = caps.has('GET', '/v1/zones') ? await maybe('/v1/zones') : null;
      if (!alive) return;
      loadedAt = Date.now();
      if (!data) {
        note.hidden = false;
        return;
      }
      note.hidden = true;
      layer.clearLayers();
      zones = data.zones || [];
      // Thousands of zones draw on one canvas rather than as thousands of SVG elements.
      const renderer = zones.length > 1000 ? (canvas = canvas || L.canvas()) : undefined;
      for (const z of zones) {
        const l = geometryLayer(z.geometry, { color: '#b00020', weight: 2, fillOpacity: 0.15, className: 'lw-zone', renderer });
        if (l) layer.addLayer(l.bindTooltip(h('span', null, `${z.name || z.id || z.zone_id} · ${code(z.kind)}`)));
      }
      rows();
      map.invalidateSize();
      if (!fitted) fitted = fit(map, [layer]);
    },

    destroy() {
      alive = false;
      if (map) map.remove();
    },
  };
}
