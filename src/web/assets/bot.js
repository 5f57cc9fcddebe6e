// The page of one bot: reloads when its status or QR code changes (the
// server renders the page; this only notices that it is out of date).
(function () {
  var b = document.body.dataset;
  function check() {
    fetch('/api/dashboard', {credentials: 'same-origin'})
      .then(function (r) { if (r.status === 401) { location.reload(); throw new Error('token'); } return r.json(); })
      .then(function (rows) {
        var r = rows.filter(function (x) { return x.bot === b.bot; })[0];
        if (!r) return;
        if (r.status !== b.status || (r.qr_version || '') !== b.qr) location.reload();
        var s = document.getElementById('status');
        if (s && r.status_text) s.textContent = r.status_text + (r.enabled ? '' : ' (off)');
      })
      .catch(function () {});
  }
  setInterval(check, 2000);
})();
