// Alerts, newest first, with their webhook delivery state.

import { api, enc } from './api.js';
import { fill, h } from './dom.js';
import { code, t, when } from './i18n.js';

const STATES = ['pending', 'delivered', 'failed'];

export function alertsPage() {
  let rows;
  let filter = '';

  function detail(a) {
    const d = a.details || {};
    return Object.entries(d)
      .filter(([, v]) => v !== null && typeof v !== 'object')
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ');
  }

  return {
    mount(el) {
      const select = h('select', { id: 'filter-state', onchange: (e) => { filter = e.target.value; this.refresh(); } },
        h('option', { value: '' }, t('queue.all')),
        STATES.map((s) => h('option', { value: s }, t(`delivery.${s}`))));
      rows = h('tbody', { id: 'alert-rows' });
      fill(el, h('section', null,
        h('h1', null, t('alerts.title')),
        h('div', { class: 'filters' }, h('label', null, t('alerts.state'), ' ', select)),
        h('table', { class: 'grid', id: 'alerts' },
          h('thead', null, h('tr', null,
            ['alerts.detected', 'alerts.type', 'alerts.vehicle', 'alerts.device', 'alerts.delivery', '']
              .map((k) => h('th', null, k ? t(k) : '')))),
          rows)));
    },

    async refresh() {
      const data = await api(`/v1/alerts?limit=200${filter ? `&state=${enc(filter)}` : ''}`);
      const list = data.alerts || [];
      if (list.length === 0) {
        fill(rows, h('tr', null, h('td', { colspan: 6, class: 'muted' }, t('alerts.none'))));
        return;
      }
      fill(rows, list.map((a) => h('tr', { class: 'alert-row', dataset: { type: a.type } },
        h('td', { title: a.detected_at }, when(a.detected_at)),
        h('td', null, code(a.type)),
        h('td', null, a.vehicle_id ? h('a', { href: `#/vehicle/${enc(a.vehicle_id)}` }, a.vehicle_id, a.plate ? ` · ${a.plate}` : '') : ''),
        h('td', null, a.device_id || ''),
        h('td', null, t(`delivery.${a.state}`)),
        h('td', { class: 'muted' }, detail(a)))));
    },

    destroy() {},
  };
}
