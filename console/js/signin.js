// Sign-in: the admin token, checked against the API, then kept in this tab's sessionStorage.

import { api, clearToken, setToken, Unauthorized } from './api.js';
import { fill, h } from './dom.js';
import { t } from './i18n.js';

export function signinPage(message, done) {
  let note = message;
  return {
    isSignin: true,
    mount(el) {
      const input = h('input', {
        type: 'password', id: 'token', autocomplete: 'off', spellcheck: 'false', required: true,
      });
      const msg = h('p', { id: 'signin-message', class: note ? 'error' : 'muted' }, note || '');
      const button = h('button', { type: 'submit', id: 'signin-submit' }, t('signin.submit'));
      // No action and no field name: even without this script, the token could not end up in a URL.
      const form = h('form', { id: 'signin', class: 'card', method: 'post' },
        h('h1', null, t('signin.title')),
        h('p', null, t('signin.prompt')),
        h('label', { for: 'token' }, t('signin.token')),
        input,
        button,
        msg,
      );
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        const tok = input.value.trim();
        if (!tok) return;
        button.disabled = true;
        fill(msg, t('signin.checking'));
        msg.className = 'muted';
        setToken(tok);
        try {
          await api('/v1/vehicles?limit=1');
          input.value = '';
          done();
        } catch (err) {
          clearToken();
          note = err instanceof Unauthorized ? t('signin.wrong') : err.message;
          fill(msg, note);
          msg.className = 'error';
          button.disabled = false;
          input.select();
        }
      });
      fill(el, form);
      input.focus();
    },
    refresh() {},
    destroy() {},
  };
}
