// The dashboard's page and style sheet, as strings compiled into dist/ with the rest (tsc emits
// only .ts, and `npm start` runs dist/). They hold no data: app.js fetches everything with the
// API token, so they are served without it. No inline script or style: the page's CSP forbids both.

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>replimesh dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/style.css">
<script type="module" src="/dashboard/app.js"></script>
</head>
<body>
<header>
  <h1>replimesh</h1>
  <div id="node"></div>
  <div id="quorum"></div>
  <div id="updated"></div>
</header>

<section id="token-prompt" hidden>
  <form id="token-form">
    <h2>API token</h2>
    <p id="token-why"></p>
    <label>Token <input id="token-input" type="password" autocomplete="off" spellcheck="false" required></label>
    <button type="submit">Open</button>
    <p class="hint">On the node, <code>replimesh dashboard --dir DIR</code> prints a link that carries it.</p>
  </form>
</section>

<main id="data" hidden>
  <p id="result" role="status" data-state="idle"></p>
  <section>
    <h2>Virtual machines</h2>
    <table id="vms">
      <thead><tr><th>VM</th><th>Role here</th><th>State</th><th>Owner</th><th>Epoch</th>
        <th>Last point</th><th>Lag / RPO</th><th>Actions</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Peers</h2>
    <table id="peers">
      <thead><tr><th>Site</th><th>Peer</th><th>State</th><th>Actions</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Sites</h2>
    <div id="sites"></div>
  </section>
  <section>
    <h2>Notifications</h2>
    <ol id="events"></ol>
  </section>
</main>

<dialog id="confirm">
  <form method="dialog">
    <h2 id="confirm-title"></h2>
    <p id="confirm-text"></p>
    <label id="confirm-target-label">Run it on <select id="confirm-target"></select></label>
    <menu>
      <button id="confirm-cancel" value="cancel">Cancel</button>
      <button id="confirm-ok" value="ok" class="danger">Confirm</button>
    </menu>
  </form>
</dialog>
</body>
</html>
`

export const DASHBOARD_CSS = `
:root { font-family: system-ui, sans-serif; color: #1d2733; background: #f5f7fa; }
body { margin: 0 auto; max-width: 78rem; padding: 1rem 1.5rem; }
header { display: flex; gap: 1.5rem; align-items: baseline; flex-wrap: wrap; border-bottom: 1px solid #cfd6df; }
h1 { font-size: 1.4rem; margin: 0.4rem 0; }
h2 { font-size: 1.1rem; margin: 1.2rem 0 0.4rem; }
code, .id { font-family: ui-monospace, monospace; font-size: 0.9em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 0.35rem 0.6rem; border-bottom: 1px solid #e3e8ee; vertical-align: top; }
th { font-weight: 600; background: #eef1f5; }
button { font: inherit; padding: 0.15rem 0.6rem; margin: 0 0.2rem 0.2rem 0; border: 1px solid #8a97a8;
  border-radius: 4px; background: #fff; cursor: pointer; }
button:disabled { opacity: 0.5; cursor: default; }
button.danger { border-color: #b3261e; color: #b3261e; }
.state-alive, .state-running { color: #1b7f3b; font-weight: 600; }
.state-suspect { color: #a86400; font-weight: 600; }
.state-down { color: #b3261e; font-weight: 600; }
.state-stopped { color: #5b6777; }
td.breach { background: #fde2e0; color: #b3261e; font-weight: 600; }
tr.self td { background: #f0f6ff; }
.quorum-lost { color: #b3261e; font-weight: 600; }
#updated.stale { color: #b3261e; }
#result { min-height: 1.4rem; padding: 0.4rem 0.6rem; margin: 0.8rem 0 0; border-radius: 4px; }
#result[data-state="working"] { background: #fff6db; }
#result[data-state="ok"] { background: #e3f5e8; }
#result[data-state="error"] { background: #fde2e0; color: #8c1d18; }
#result[data-state="idle"] { display: none; }
#sites > span { display: inline-block; margin-right: 0.8rem; }
#events { padding-left: 1.2rem; }
#events li { margin-bottom: 0.5rem; }
#events .severity-critical, #events .severity-error { color: #b3261e; }
#events .severity-warning { color: #a86400; }
#events .detail { color: #5b6777; font-size: 0.9em; }
#token-prompt { max-width: 32rem; margin: 2rem 0; padding: 1rem 1.2rem; background: #fff; border: 1px solid #cfd6df; }
#token-prompt input { width: 100%; margin: 0.4rem 0 0.8rem; font-family: ui-monospace, monospace; }
#token-why { color: #b3261e; }
.hint { color: #5b6777; font-size: 0.9em; }
dialog { max-width: 34rem; border: 1px solid #8a97a8; border-radius: 6px; }
dialog menu { display: flex; justify-content: flex-end; gap: 0.5rem; padding: 0; margin: 1rem 0 0; }
`
