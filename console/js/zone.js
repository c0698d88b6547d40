// The console's clock: times and the track's days are the lender's (`rules.timezone`, the zone
// places count nights in), not the browser's, so that an officer elsewhere reads the same day.

let zone; // undefined until configured: the browser's own

/// Takes the server's zone; an unknown name leaves the browser's.
export function setZone(name) {
  try {
    new Intl.DateTimeFormat('en', { timeZone: name });
    zone = name;
  } catch {
    zone = undefined;
  }
}

export function zoneName() {
  return zone || Intl.DateTimeFormat().resolvedOptions().timeZone;
}

/// Options that make `toLocaleString` speak in the zone.
export function inZone(options) {
  return zone ? { ...options, timeZone: zone } : options;
}

/// The wall-clock fields of the instant `ms` in the zone.
function fields(ms) {
  const f = new Intl.DateTimeFormat('en-US', inZone({
    hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  }));
  const o = {};
  for (const p of f.formatToParts(new Date(ms))) o[p.type] = p.value;
  return o;
}

/// How far the zone's wall clock is ahead of UTC at the instant `ms`.
function offsetAt(ms) {
  const p = fields(ms);
  const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
  return wall - Math.floor(ms / 1000) * 1000;
}

/// Today's date in the zone, `YYYY-MM-DD`.
export function today() {
  const p = fields(Date.now());
  return `${p.year}-${p.month}-${p.day}`;
}

/// The instant the day `YYYY-MM-DD` begins in the zone (a second look settles a day on which
/// the offset changes).
export function startOf(day) {
  const [y, m, d] = day.split('-').map(Number);
  const wall = Date.UTC(y, m - 1, d);
  const first = wall - offsetAt(wall);
  return new Date(wall - offsetAt(first));
}

/// The day after `YYYY-MM-DD`.
export function nextDay(day) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10);
}
