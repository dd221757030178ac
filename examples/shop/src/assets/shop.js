// The race panel of the sessionkit shop (GET /assets/shop.js): N concurrent
// increments of the session's counter `n`, buffered and then locked, and how
// many of each were lost. Plain JavaScript, no libraries.
'use strict';

(() => {
  const panel = document.getElementById('race');
  const run = document.getElementById('race-run');
  const size = document.getElementById('race-n');
  const work = document.getElementById('race-work');
  const status = document.getElementById('race-status');
  if (!panel || !run || !size || !work || !status) return;

  // GET /api/session: the session's `n` and its CSRF token (null without a
  // session). A GET never creates a session.
  async function readSession() {
    const res = await fetch('/api/session', { credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error(`GET /api/session answered ${res.status}`);
    return res.json();
  }

  // A POST with the token in the header the shop's CSRF check reads.
  function post(path, token) {
    const headers = token ? { 'x-csrf-token': token } : {};
    return fetch(path, { method: 'POST', headers, credentials: 'same-origin', cache: 'no-store' });
  }

  // Puts the session's token into every form of the page, so that they keep
  // working when the race started the session (the page had none to embed).
  function arm(token) {
    for (const form of document.querySelectorAll('form[method="post"]')) {
      let field = form.querySelector('input[name="csrf_token"]');
      if (!field) {
        field = document.createElement('input');
        field.type = 'hidden';
        field.name = 'csrf_token';
        form.prepend(field);
      }
      field.value = token;
    }
    const none = document.getElementById('no-session');
    if (none) none.textContent = 'The race started a session: the forms now carry its token.';
  }

  // Fires `count` POSTs to `path` at once; reads `n` before and after.
  async function burst(path, count, token) {
    const before = (await readSession()).n;
    const started = performance.now();
    const answers = await Promise.all(
      Array.from({ length: count }, () => post(path, token).then((r) => r.ok, () => false)),
    );
    const ms = Math.round(performance.now() - started);
    const after = (await readSession()).n;
    const acknowledged = answers.filter(Boolean).length;
    const counted = after - before;
    return { count, acknowledged, failed: count - acknowledged, counted, lost: acknowledged - counted, before, after, ms };
  }

  function show(lane, r) {
    document.getElementById(`${lane}-sent`).textContent = r.acknowledged;
    document.getElementById(`${lane}-counted`).textContent = r.counted;
    const lost = document.getElementById(`${lane}-lost`);
    lost.textContent = r.lost;
    lost.classList.toggle('zero', r.lost === 0);
    const failed = r.failed ? `, ${r.failed} refused or failed` : '';
    document.getElementById(`${lane}-span`).textContent =
      `n went from ${r.before} to ${r.after} in ${r.ms} ms${failed}.`;
    const fill = document.querySelector(`#lane-${lane} .fill`);
    fill.style.width = `${r.acknowledged ? (100 * r.counted) / r.acknowledged : 0}%`;
  }

  function clear() {
    for (const lane of ['buffered', 'locked']) {
      for (const what of ['sent', 'counted', 'lost']) {
        document.getElementById(`${lane}-${what}`).textContent = '–';
      }
      document.getElementById(`${lane}-span`).textContent = '';
      document.querySelector(`#lane-${lane} .fill`).style.width = '0';
    }
  }

  run.addEventListener('click', async () => {
    const count = Number(size.value);
    // Simulated work between each request's read and write (`work_ms`).
    const query = `?work_ms=${Number(work.value)}`;
    run.disabled = true;
    panel.setAttribute('aria-busy', 'true');
    panel.dataset.state = 'running';
    clear();
    status.textContent = `Sending ${count} buffered increments at once…`;
    try {
      let session = await readSession();
      if (!session.csrf_token) {
        // No session yet: one POST starts it (a request without a session
        // has no token to show), and the bursts then carry its token.
        const res = await post('/api/counter', null);
        if (!res.ok) throw new Error(`POST /api/counter answered ${res.status}`);
        session = await readSession();
        if (!session.csrf_token) throw new Error('no session after the first POST: are cookies blocked?');
        arm(session.csrf_token);
      }
      const buffered = await burst(`/api/counter/buffered${query}`, count, session.csrf_token);
      show('buffered', buffered);
      status.textContent = `Sending ${count} locked increments at once…`;
      const locked = await burst(`/api/counter${query}`, count, session.csrf_token);
      show('locked', locked);
      const counter = document.getElementById('counter-n');
      if (counter) counter.textContent = locked.after;
      status.textContent =
        `Done: ${count} concurrent requests each way. ` +
        `Without a lock ${buffered.lost} of ${buffered.acknowledged} increments were lost; ` +
        `with the lock ${locked.lost} of ${locked.acknowledged}.`;
      panel.dataset.state = 'done';
    } catch (e) {
      status.textContent = `The race did not finish: ${e.message}`;
      panel.dataset.state = 'failed';
    } finally {
      run.disabled = false;
      panel.removeAttribute('aria-busy');
    }
  });
})();

// The account page (GET /account): its sign-out forms post to the JSON API
// (which answers 204, so a plain form submission would leave the page as it
// was); with this script the page reloads to show what is left. Without
// it, the forms still work: reload to see the change.
(() => {
  for (const form of document.querySelectorAll('form[data-reload]')) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const res = await fetch(form.action, {
        method: 'POST',
        body: new URLSearchParams(new FormData(form)),
        credentials: 'same-origin',
        cache: 'no-store',
      });
      const status = document.getElementById('account-status');
      if (res.ok) {
        window.location.reload();
      } else if (status) {
        status.textContent = `That did not work (${res.status}). Reload the page and try again.`;
      }
    });
  }
})();
