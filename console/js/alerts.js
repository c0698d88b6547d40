// Alerts, newest first, with their webhook delivery state, a page of 100 at a time (the server's
// `before` cursor, the `seq` of a page's last alert, leads to older ones).

import { api, enc } from './api.js';
import { fill, h } from './dom.js';
import { code, t, when } from './i18n.js';

const STATES = ['pending', 'delivered', 'failed'];
const PAGE = 100;

export function alertsPage() {
  let rows, prev, next, pageNo;
  let filter = '';
  // `cursors[i]` is the `before` of page i (null for the newest); the poll refreshes the page shown.
  let cursors = [null];
  let older = null;
  let asked = 0; // answers to older questions (a filter changed since) are dropped
  let page;
  // At once on a click; a failure shows at the next poll, which asks again.
  function reload() {
    page.refresh().catch(() => {});
  }

  function detail(a) {
    const d = a.details || {};
    return Object.entries(d)
      .filter(([, v]) => v !== null && typeof v !== 'object')
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ');
  }

  page = {
    mount(el) {
      const select = h('select', { id: 'filter-state', onchange: (e) => { filter = e.target.value; cursors = [null]; reload(); } },
        h('option', { value: '' }, t('queue.all')),
        STATES.map((s) => h('option', { value: s }, t(`delivery.${s}`))));
      rows = h('tbody', { id: 'alert-rows' });
      prev = h('button', { type: 'button', id: 'alerts-prev', hidden: true,
        onclick: () => { if (cursors.length > 1) cursors.pop(); reload(); } }, t('alerts.newer'));
      next = h('button', { type: 'button', id: 'alerts-next', hidden: true,
        onclick: () => { if (older !== null) cursors.push(older); reload(); } }, t('alerts.older'));
      pageNo = h('span', { class: 'muted', id: 'alerts-page' });
      fill(el, h('section', null,
        h('h1', null, t('alerts.title')),
        h('div', { class: 'filters' }, h('label', null, t('alerts.state'), ' ', select)),
        h('table', { class: 'grid', id: 'alerts' },
          h('thead', null, h('tr', null,
            ['alerts.detected', 'alerts.type', 'alerts.vehicle', 'alerts.device', 'alerts.delivery', '']
              .map((k) => h('th', null, k ? t(k) : '')))),
          rows),
        h('div', { class: 'pager' }, prev, ' ', pageNo, ' ', next)));
    },

    async refresh() {
      // One more than a page: whether an older page exists, without a page that may be empty.
      const q = [`limit=${PAGE + 1}`];
      if (filter) q.push(`state=${enc(filter)}`);
      const before = cursors[cursors.length - 1];
      if (before !== null) q.push(`before=${before}`);
      asked += 1;
      const mine = asked;
      const data = await api(`/v1/alerts?${q.join('&')}`);
      if (mine !== asked) return;
      const list = (data.alerts || []).slice(0, PAGE);
      older = (data.alerts || []).length > PAGE ? list[list.length - 1].seq : null;
      next.hidden = older === null;
      prev.hidden = cursors.length < 2;
      pageNo.textContent = prev.hidden && next.hidden ? '' : t('queue.page', { n: cursors.length });
      if (list.length === 0) {
        fill(rows, h('tr', null, h('td', { colspan: 6, class: 'muted' }, t('alerts.none'))));
        return;
      }
      fill(rows, list.map((a) => h('tr', { class: 'alert-row', dataset: { type: a.type, seq: a.seq } },
        h('td', { title: a.detected_at }, when(a.detected_at)),
        h('td', null, code(a.type)),
        h('td', null, a.vehicle_id ? h('a', { href: `#/vehicle/${enc(a.vehicle_id)}` }, a.vehicle_id, a.plate ? ` · ${a.plate}` : '') : ''),
        h('td', null, a.device_id || ''),
        // "delivered" with no delivery means no webhook takes this type: say so, lest it read
        // as "the collections system has it".
        h('td', null, a.state === 'delivered' && (a.deliveries || []).length === 0
          ? t('delivery.unsent') : t(`delivery.${a.state}`)),
        h('td', { class: 'muted' }, detail(a)))));
    },

    destroy() {},
  };
  return page;
}
