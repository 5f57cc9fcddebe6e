var qrShown = {};
function t(s) { return s == null ? '-' : new Date(s * 1000).toISOString().replace('T', ' ').replace('.000Z', 'Z'); }
function cell(tr, text, cls) { var td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); return td; }
// The queue in short, as `status` shows it: "3 (receipt 2, failing 1)".
function queuedText(m) {
  var kinds = m.by_kind || {}, parts = [], failing = 0;
  Object.keys(kinds).sort().forEach(function (k) {
    failing += kinds[k].failing || 0;
    if (k !== 'message') parts.push(k + ' ' + kinds[k].queued);
  });
  if (failing) parts.push('failing ' + failing);
  if (m.held) parts.push(m.held + ' held');
  return String(m.queued || 0) + (parts.length ? ' (' + parts.join(', ') + ')' : '');
}
function render(rows) {
  var body = document.querySelector('#bots tbody');
  var keep = {};
  rows.forEach(function (r) {
    keep[r.bot] = true;
    var tr = document.getElementById('bot-' + r.bot);
    if (!tr) {
      tr = document.createElement('tr'); tr.id = 'bot-' + r.bot; tr.dataset.bot = r.bot; body.appendChild(tr);
      tr.addEventListener('click', function (e) { if (!e.target.closest('a')) location.href = '/bots/' + encodeURIComponent(r.bot); });
    }
    var qrTd = tr.querySelector('td.qr');
    var qrHtml = qrTd ? qrTd.innerHTML : '';
    tr.innerHTML = '';
    var name = cell(tr, '', 'bot'); var a = document.createElement('a');
    a.href = '/bots/' + encodeURIComponent(r.bot); a.textContent = r.bot; name.appendChild(a);
    var st = cell(tr, '', 'status-cell');
    var badge = document.createElement('span');
    badge.className = 'status ' + r.status; badge.textContent = (r.status_text || r.status) + (r.enabled ? '' : ' (off)');
    st.appendChild(badge);
    if (r.idle) { var i = document.createElement('span'); i.className = 'idle'; i.textContent = 'IDLE'; st.appendChild(i); }
    cell(tr, r.phone || '-'); cell(tr, t(r.last_activity)); cell(tr, t(r.authenticated_at));
    cell(tr, String(r.connection_attempts));
    var m = r.messages || {};
    cell(tr, (m.inbound || 0) + ' / ' + (m.outbound || 0), 'messages');
    cell(tr, queuedText(m), 'queued');
    cell(tr, r.last_connection_error || '-');
    cell(tr, r.availability_24h == null ? '-' : r.availability_24h.toFixed(1) + ' %');
    var q = cell(tr, '', 'qr');
    if (r.qr_version) {
      if (qrShown[r.bot] === r.qr_version && qrHtml) { q.innerHTML = qrHtml; }
      else {
        qrShown[r.bot] = r.qr_version;
        fetch('/api/bots/' + encodeURIComponent(r.bot) + '/qr.svg', {credentials: 'same-origin'})
          .then(function (x) { return x.ok ? x.text() : ''; })
          .then(function (svg) { var c = document.querySelector('#bot-' + CSS.escape(r.bot) + ' td.qr'); if (c) { c.innerHTML = svg; var s = c.querySelector('svg'); if (s) { s.setAttribute('role', 'img'); s.setAttribute('aria-label', 'QR code for ' + r.bot); } } });
      }
    } else { delete qrShown[r.bot]; }
  });
  Array.prototype.slice.call(body.children).forEach(function (tr) { if (!keep[tr.dataset.bot]) body.removeChild(tr); });
  document.getElementById('updated').textContent = rows.length + ' bot(s), updated ' + new Date().toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}
function refresh() {
  fetch('/api/dashboard', {credentials: 'same-origin'})
    .then(function (r) { if (r.status === 401) { location.reload(); throw new Error('token'); } return r.json(); })
    .then(render)
    .catch(function (e) { document.getElementById('updated').textContent = 'update failed: ' + e.message; });
}
refresh(); setInterval(refresh, 2000);
