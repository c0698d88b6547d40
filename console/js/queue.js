// The collections queue: vehicles by risk, highest first, with tier and loan-status filters,
// a page of 100 at a time (the server's `next` cursor leads to the following page, however deep
// the fleet). A server without risk scores still gets a useful order: overdue first, most days
// past due first, then the longest silent.

import { api, enc } from './api.js';
import { fill, h } from './dom.js';
import { ago, code, t } from './i18n.js';

const TIERS = ['high', 'medium', 'low', 'none'];
const LOANS = ['overdue', 'current', 'closed'];
const PAGE = 100;

// The filters and the page outlive the page object: an officer works the queue car by car, and
// coming back from a vehicle finds the queue as it was left. `cursors[i]` is the `after` of page
// i (null for the first); the poll refreshes the page shown.
const state = { tiers: new Set(), loan: '', cursors: [null], limit: PAGE };

/// Signing out forgets the filters and the page: the next officer starts from the whole queue.
export function resetQueue() {
  state.tiers = new Set();
  state.loan = '';
  state.cursors = [null];
}

export function queuePage(caps) {
  const serverRisk = caps.param('GET', '/v1/vehicles', 'tier');
  const serverLoan = caps.param('GET', '/v1/vehicles', 'loan_status');
  state.limit = serverRisk ? PAGE : 1000;
  let table, note, prev, next, pageNo, tierBox;
  let nextCursor = null;
  let asked = 0; // answers to older questions (a filter changed since) are dropped

  function firstPage() {
    state.cursors = [null];
  }

  // At once on a click; a failure shows at the next poll, which asks again.
  let page;
  function reload() {
    page.refresh().catch(() => {});
  }

  function row(v) {
    const risk = v.risk || null;
    const loan = v.loan || {};
    const tier = risk ? risk.tier : null;
    return h('tr', { class: 'vehicle-row', dataset: { vehicleId: v.vehicle_id, tier: tier || '' },
      onclick: () => { location.hash = `#/vehicle/${enc(v.vehicle_id)}`; } },
      h('td', { class: 'risk-col' }, tier ? h('span', { class: `tier tier-${tier}` }, t(`tier.${tier}`)) : '—'),
      h('td', { class: 'num risk-col' }, risk ? risk.score : '—'),
      h('td', { class: 'risk-col' }, risk ? (risk.reasons || []).map((r) => code(r.code)).join(', ') : ''),
      h('td', null, h('a', { href: `#/vehicle/${enc(v.vehicle_id)}` }, v.vehicle_id)),
      h('td', null, v.plate || ''),
      h('td', null, h('span', { class: `loan loan-${loan.status}` }, t(`loan.${loan.status}`))),
      h('td', { class: 'num' }, loan.days_past_due ?? ''),
      h('td', { title: v.last_seen || '' }, ago(v.last_seen)),
    );
  }

  function order(list) {
    const seen = (v) => (v.last_seen ? Date.parse(v.last_seen) : 0);
    const key = (v) => [
      v.risk ? v.risk.score : -1,
      v.loan && v.loan.status === 'overdue' ? 1 : 0,
      (v.loan && v.loan.days_past_due) || 0,
      -seen(v),
    ];
    return list
      .map((v) => [key(v), v])
      .sort(([a], [b]) => {
        for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return b[i] - a[i];
        return 0;
      })
      .map(([, v]) => v);
  }

  page = {
    mount(el) {
      const loanSelect = h('select', { id: 'filter-loan', onchange: (e) => { state.loan = e.target.value; firstPage(); reload(); } },
        h('option', { value: '' }, t('queue.all')),
        LOANS.map((l) => h('option', { value: l }, t(`loan.${l}`))));
      loanSelect.value = state.loan;
      tierBox = h('span', { class: 'tiers', id: 'filter-tier' }, t('queue.filter.tier'), ' ',
        TIERS.map((tier) => h('label', null,
          h('input', { type: 'checkbox', value: tier, checked: state.tiers.has(tier),
            onchange: (e) => { if (e.target.checked) state.tiers.add(tier); else state.tiers.delete(tier); firstPage(); reload(); } }),
          t(`tier.${tier}`))));
      note = h('p', { class: 'muted', id: 'queue-note', hidden: true }, t('queue.no_risk'));
      table = h('tbody', { id: 'queue-rows' });
      prev = h('button', { type: 'button', id: 'queue-prev', hidden: true,
        onclick: () => { if (state.cursors.length > 1) state.cursors.pop(); reload(); } }, t('queue.prev'));
      next = h('button', { type: 'button', id: 'queue-next', hidden: true,
        onclick: () => { if (nextCursor) state.cursors.push(nextCursor); reload(); } }, t('queue.next'));
      pageNo = h('span', { class: 'muted', id: 'queue-page' });
      fill(el, h('section', { class: 'queue' },
        h('h1', null, t('queue.title')),
        h('div', { class: 'filters' }, tierBox, h('label', null, t('queue.filter.loan'), ' ', loanSelect)),
        note,
        h('table', { class: 'grid', id: 'queue' },
          h('thead', null, h('tr', null,
            ['queue.tier', 'queue.score', 'queue.reasons', 'queue.vehicle', 'queue.plate', 'queue.loan', 'queue.dpd', 'queue.last_seen']
              .map((k, i) => h('th', { class: i < 3 ? 'risk-col' : null }, t(k))))),
          table),
        h('div', { class: 'pager' }, prev, ' ', pageNo, ' ', next)));
    },

    async refresh() {
      const q = [`limit=${state.limit}`];
      if (serverRisk && state.tiers.size) q.push(`tier=${[...state.tiers].join(',')}`);
      if (serverLoan && state.loan) q.push(`loan_status=${enc(state.loan)}`);
      const after = serverRisk ? state.cursors[state.cursors.length - 1] : null;
      if (after) q.push(`after=${enc(after)}`);
      asked += 1;
      const mine = asked;
      const data = await api(`/v1/vehicles?${q.join('&')}`);
      if (mine !== asked) return;
      let list = data.vehicles || [];
      const anyRisk = list.some((v) => v.risk);
      if (!serverLoan && state.loan) list = list.filter((v) => v.loan && v.loan.status === state.loan);
      if (!serverRisk && state.tiers.size) list = list.filter((v) => v.risk && state.tiers.has(v.risk.tier));
      if (!serverRisk) list = order(list);
      tierBox.hidden = !serverRisk && !anyRisk;
      note.hidden = serverRisk || anyRisk;
      document.getElementById('queue').classList.toggle('no-risk', !serverRisk && !anyRisk);
      nextCursor = serverRisk ? data.next || null : null;
      next.hidden = !nextCursor;
      prev.hidden = state.cursors.length < 2;
      pageNo.textContent = prev.hidden && next.hidden ? '' : t('queue.page', { n: state.cursors.length });
      if (list.length === 0) fill(table, h('tr', null, h('td', { colspan: 8, class: 'muted' }, t('queue.empty'))));
      else fill(table, list.map(row));
    },

    destroy() {},
  };
  return page;
}
