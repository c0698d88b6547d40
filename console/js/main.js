// The console's shell: sign-in gate, hash routes (#/queue, #/vehicle/ID, #/alerts, #/zones),
// the language switch, and the polling that keeps the open page fresh without a reload.

import { capabilities, clearToken, onUnauthorized, token, Unauthorized, withTimeout } from './api.js';
import { fill, h } from './dom.js';
import { lang, locale, onLangChange, setLang, t, translateStatic } from './i18n.js';
import { configure } from './map.js';
import { inZone, setZone, zoneName } from './zone.js';
import { signinPage } from './signin.js';
import { queuePage, resetQueue } from './queue.js';
import { vehiclePage } from './vehicle.js';
import { alertsPage } from './alerts.js';
import { zonesPage } from './zones.js';

const POLL_MS = 5000;
const CONFIG_EVERY = 12; // polls between reads of the settings (a minute)

// Diagnostics: script errors and Content-Security-Policy violations are shown in the status line
// (a blocked tile host is visible to the operator) and kept, with the count of page refreshes,
// for the end-to-end test.
const diag = { errors: [], csp: [], polls: 0 };
window.lienwatch = diag;
window.addEventListener('error', (e) => problem(diag.errors, String(e.message)));
window.addEventListener('unhandledrejection', (e) => problem(diag.errors, String(e.reason)));
document.addEventListener('securitypolicyviolation', (e) =>
  problem(diag.csp, `${e.violatedDirective} ${e.blockedURI}`),
);

const main = document.getElementById('main');
const status = document.getElementById('status');
const nav = document.getElementById('nav');
const signout = document.getElementById('signout');
const langSelect = document.getElementById('lang');

let page = null;
let timer = null;
let generation = 0;

function problem(list, msg) {
  list.push(msg);
  status.textContent = msg;
  status.className = 'error';
}

function setStatus(msg, isError) {
  status.textContent = msg;
  status.className = isError ? 'error' : '';
}

function stop() {
  generation += 1;
  if (timer) clearTimeout(timer);
  timer = null;
  if (page && page.destroy) page.destroy();
  page = null;
}

/// Back to sign-in, with the reason.
function signIn(message) {
  stop();
  clearToken();
  nav.hidden = true;
  signout.hidden = true;
  setStatus('', false);
  page = signinPage(message, () => route());
  page.mount(main);
}

onUnauthorized(() => {
  if (!page || !page.isSignin) signIn(t('signin.expired'));
});

/// The part of a route after its name, as written; a malformed escape (`%` alone) is taken as
/// it stands rather than failing the navigation.
function routeArg(arg) {
  try {
    return decodeURIComponent(arg || '');
  } catch {
    return arg || '';
  }
}

async function route() {
  stop();
  if (!token()) {
    signIn(null);
    return;
  }
  const gen = generation;
  const caps = await capabilities();
  // Another navigation came while this one waited: it owns the page.
  if (gen !== generation) return;
  nav.hidden = false;
  signout.hidden = false;
  document.getElementById('nav-zones').hidden = !(caps.known && caps.has('GET', '/v1/zones'));
  const [, name, arg] = (location.hash || '#/queue').split('/');
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.id === `nav-${name}`);
  switch (name) {
    case 'vehicle':
      page = vehiclePage(routeArg(arg), caps);
      break;
    case 'alerts':
      page = alertsPage(caps);
      break;
    case 'zones':
      page = zonesPage(caps);
      break;
    default:
      page = queuePage(caps);
  }
  fill(main);
  page.mount(main);
  poll(generation);
}

/// Refreshes the open page now and every few seconds (not while the tab is hidden); a page
/// left behind stops polling.
async function poll(gen) {
  if (gen !== generation || !page) return;
  if (!document.hidden) {
    try {
      await page.refresh();
      diag.polls += 1;
      if (gen === generation) {
        setStatus(t('status.updated', { time: new Date().toLocaleTimeString(locale(), inZone({})) }), false);
      }
      // A reload may have changed `rules.timezone`: read the settings again now and then, and
      // draw the page anew in the new zone.
      if (diag.polls % CONFIG_EVERY === 0 && gen === generation && (await readConfig().catch(() => false)) && gen === generation) {
        route();
        return;
      }
    } catch (e) {
      if (e instanceof Unauthorized) return;
      if (gen === generation) setStatus(t('status.error', { msg: e.message }), true);
    }
  }
  if (gen === generation) timer = setTimeout(() => poll(gen), POLL_MS);
}

signout.addEventListener('click', () => {
  resetQueue();
  signIn(null);
});
window.addEventListener('hashchange', () => {
  if (token()) route();
});
langSelect.addEventListener('change', () => setLang(langSelect.value));
onLangChange(() => {
  translateStatic(document);
  if (page && page.isSignin) page.mount(main);
  else if (token()) route();
});

/// Reads the console's settings (tiles, `rules.timezone`); true when the zone changed.
async function readConfig() {
  const c = await withTimeout((signal) =>
    fetch('/console/config.json', { cache: 'no-store', signal }).then((r) => r.json()));
  configure(c);
  const before = zoneName();
  if (c.timezone) setZone(c.timezone);
  return zoneName() !== before;
}

async function start() {
  langSelect.value = lang();
  translateStatic(document);
  try {
    await readConfig();
  } catch (e) {
    problem(diag.errors, `config: ${e.message}`);
  }
  if (typeof L === 'undefined') {
    fill(main, h('p', { class: 'error' }, 'Leaflet did not load'));
    return;
  }
  route();
}

start();

