// English and Simplified Chinese. The browser's language decides at first; the officer's choice
// is remembered in this browser (it is not a secret).

import { inZone } from './zone.js';
const STRINGS = {
  en: {
    'lang': 'Language',
    'nav.queue': 'Queue',
    'nav.alerts': 'Alerts',
    'nav.zones': 'Risk zones',
    'signout': 'Sign out',
    'signin.title': 'Sign in',
    'signin.prompt': 'Enter the admin token of this lienwatch. It is kept in this browser tab only, until you sign out or close the tab.',
    'signin.token': 'Admin token',
    'signin.submit': 'Sign in',
    'signin.wrong': 'That token was refused.',
    'signin.expired': 'The token was refused: sign in again.',
    'signin.checking': 'Checking…',
    'queue.title': 'Collections queue',
    'queue.vehicle': 'Vehicle',
    'queue.plate': 'Plate',
    'queue.tier': 'Tier',
    'queue.score': 'Score',
    'queue.reasons': 'Reasons',
    'queue.loan': 'Loan',
    'queue.dpd': 'Days past due',
    'queue.last_seen': 'Last seen',
    'queue.filter.tier': 'Tier',
    'queue.filter.loan': 'Loan status',
    'queue.all': 'All',
    'queue.empty': 'No vehicles match.',
    'queue.next': 'Next page',
    'queue.prev': 'Previous page',
    'queue.page': 'Page {n}',
    'queue.no_risk': 'Risk scores are not available on this server: ordered by loan status and days past due.',
    'tier.high': 'High',
    'tier.medium': 'Medium',
    'tier.low': 'Low',
    'tier.none': 'None',
    'loan.current': 'Current',
    'loan.overdue': 'Overdue',
    'loan.closed': 'Closed',
    'vehicle.back': '← Queue',
    'vehicle.vin': 'VIN',
    'vehicle.risk': 'Risk',
    'vehicle.dpd': '{n} days past due',
    'vehicle.devices': 'Devices',
    'vehicle.device': 'Device',
    'vehicle.kind': 'Kind',
    'vehicle.protocol': 'Protocol',
    'vehicle.fix': 'Last fix',
    'vehicle.fix_valid': 'GPS fix',
    'vehicle.fix_invalid': 'LBS / no fix',
    'vehicle.no_position': 'no position yet',
    'vehicle.no_coords': 'no coordinates',
    'vehicle.cell': 'cell',
    'vehicle.fix_age': 'fix {age}',
    'vehicle.last_valid': 'last valid fix {age}',
    'vehicle.seen': 'seen {age}',
    'vehicle.track': 'Track',
    'vehicle.track_day': 'Day',
    'vehicle.track_points': '{n} fixes',
    'vehicle.track_none': 'No fixes that day.',
    'vehicle.track_failed': 'The track of that day could not be read; it is tried again.',
    'vehicle.track_truncated': '(the first {n} of the day only)',
    'vehicle.track_suspect': '({n} dated in the future, not drawn)',
    'vehicle.places': 'Places',
    'vehicle.place_night': 'Night',
    'vehicle.place_day': 'Day',
    'vehicle.place_line': '{kind}: {dwell} h, {visits} visits',
    'vehicle.last_stop': 'Last stop: since {since}, {dwell} h',
    'vehicle.places_none': 'No places found in the last 30 days.',
    'vehicle.zones': 'Risk zones nearby',
    'vehicle.zones_none': 'No risk zone within {km} km.',
    'vehicle.alerts': 'Recent alerts',
    'vehicle.alerts_none': 'No alerts.',
    'vehicle.geofence': 'Geofence',
    'vehicle.not_found': 'No such vehicle.',
    'locate.button': 'Locate now',
    'locate.queued': 'Locate: queued',
    'locate.sent': 'Locate: sent, waiting for the answer',
    'locate.answered': 'Locate: answered',
    'locate.failed': 'Locate: failed',
    'locate.expired': 'Locate: expired',
    'locate.unsupported': 'This device cannot be asked to locate.',
    'locate.never_seen': 'This device has never connected: it can be asked once it has.',
    'locate.gone': 'the command is no longer there',
    'locate.look_failed': 'its state could not be read: {msg}',
    'alerts.title': 'Alerts',
    'alerts.type': 'Alert',
    'alerts.vehicle': 'Vehicle',
    'alerts.device': 'Device',
    'alerts.detected': 'Raised',
    'alerts.delivery': 'Delivery',
    'alerts.state': 'Delivery state',
    'alerts.none': 'No alerts.',
    'alerts.older': 'Older',
    'alerts.newer': 'Newer',
    'delivery.pending': 'pending',
    'delivery.delivered': 'delivered',
    'delivery.failed': 'failed',
    'delivery.unsent': 'not sent: no webhook takes this type',
    'zones.title': 'Risk zones',
    'zones.name': 'Name',
    'zones.kind': 'Kind',
    'zones.none': 'No risk zones.',
    'zones.range': '{from} to {to} of {n}',
    'zones.reload': 'Reload',
    'zones.unavailable': 'Risk zones are not available on this server.',
    'status.updated': 'Updated {time}',
    'status.error': 'Could not refresh: {msg}',
    'api.timeout': 'no answer within {s} s',
    'never': 'never',
    'loading': 'Loading…',
  },
  zh: {
    'lang': '语言',
    'nav.queue': '催收队列',
    'nav.alerts': '告警',
    'nav.zones': '风险区域',
    'signout': '退出',
    'signin.title': '登录',
    'signin.prompt': '请输入本 lienwatch 的管理令牌。令牌只保存在当前浏览器标签页中，退出或关闭标签页即清除。',
    'signin.token': '管理令牌',
    'signin.submit': '登录',
    'signin.wrong': '令牌无效。',
    'signin.expired': '令牌被拒绝，请重新登录。',
    'signin.checking': '正在验证…',
    'queue.title': '催收队列',
    'queue.vehicle': '车辆',
    'queue.plate': '车牌',
    'queue.tier': '风险等级',
    'queue.score': '分数',
    'queue.reasons': '原因',
    'queue.loan': '贷款',
    'queue.dpd': '逾期天数',
    'queue.last_seen': '最后在线',
    'queue.filter.tier': '风险等级',
    'queue.filter.loan': '贷款状态',
    'queue.all': '全部',
    'queue.empty': '没有符合条件的车辆。',
    'queue.next': '下一页',
    'queue.prev': '上一页',
    'queue.page': '第 {n} 页',
    'queue.no_risk': '本服务器未提供风险评分：按贷款状态和逾期天数排序。',
    'tier.high': '高',
    'tier.medium': '中',
    'tier.low': '低',
    'tier.none': '无',
    'loan.current': '正常',
    'loan.overdue': '逾期',
    'loan.closed': '已结清',
    'vehicle.back': '← 队列',
    'vehicle.vin': '车架号',
    'vehicle.risk': '风险',
    'vehicle.dpd': '逾期 {n} 天',
    'vehicle.devices': '设备',
    'vehicle.device': '设备',
    'vehicle.kind': '类型',
    'vehicle.protocol': '协议',
    'vehicle.fix': '最后定位',
    'vehicle.fix_valid': 'GPS 定位',
    'vehicle.fix_invalid': '基站 / 未定位',
    'vehicle.no_position': '尚无位置',
    'vehicle.no_coords': '无坐标',
    'vehicle.cell': '基站',
    'vehicle.fix_age': '定位于{age}',
    'vehicle.last_valid': '最后有效定位 {age}',
    'vehicle.seen': '在线于{age}',
    'vehicle.track': '轨迹',
    'vehicle.track_day': '日期',
    'vehicle.track_points': '{n} 个定位点',
    'vehicle.track_none': '当天没有定位。',
    'vehicle.track_failed': '无法读取当天轨迹，稍后重试。',
    'vehicle.track_truncated': '（仅显示当天前 {n} 个）',
    'vehicle.track_suspect': '（{n} 个时间在未来，未绘制）',
    'vehicle.places': '常驻地点',
    'vehicle.place_night': '夜间',
    'vehicle.place_day': '白天',
    'vehicle.place_line': '{kind}：{dwell} 小时，{visits} 次',
    'vehicle.last_stop': '最近停留：自 {since}，{dwell} 小时',
    'vehicle.places_none': '近 30 天没有常驻地点。',
    'vehicle.zones': '附近的风险区域',
    'vehicle.zones_none': '{km} 公里内没有风险区域。',
    'vehicle.alerts': '最近告警',
    'vehicle.alerts_none': '没有告警。',
    'vehicle.geofence': '电子围栏',
    'vehicle.not_found': '没有这辆车。',
    'locate.button': '立即定位',
    'locate.queued': '定位：排队中',
    'locate.sent': '定位：已下发，等待应答',
    'locate.answered': '定位：已应答',
    'locate.failed': '定位：失败',
    'locate.expired': '定位：已过期',
    'locate.unsupported': '该设备不支持定位指令。',
    'locate.never_seen': '该设备从未连接过：连接后才能下发指令。',
    'locate.gone': '指令已不存在',
    'locate.look_failed': '无法读取指令状态：{msg}',
    'alerts.title': '告警',
    'alerts.type': '告警',
    'alerts.vehicle': '车辆',
    'alerts.device': '设备',
    'alerts.detected': '时间',
    'alerts.delivery': '推送',
    'alerts.state': '推送状态',
    'alerts.none': '没有告警。',
    'alerts.older': '更早',
    'alerts.newer': '更新',
    'delivery.pending': '待推送',
    'delivery.delivered': '已推送',
    'delivery.failed': '推送失败',
    'delivery.unsent': '未推送：无 webhook 接收此类型',
    'zones.title': '风险区域',
    'zones.name': '名称',
    'zones.kind': '类型',
    'zones.none': '没有风险区域。',
    'zones.range': '第 {from} 至 {to} 个，共 {n} 个',
    'zones.reload': '刷新',
    'zones.unavailable': '本服务器未提供风险区域。',
    'status.updated': '更新于 {time}',
    'status.error': '刷新失败：{msg}',
    'api.timeout': '{s} 秒内无应答',
    'never': '从未',
    'loading': '加载中…',
  },
};

// Codes the API sends (alert types, risk reasons, zone kinds, device kinds): shown translated
// where a translation exists, else as sent.
const CODES = {
  en: {
    geofence_exit: 'Left geofence', geofence_return: 'Back in geofence',
    silent_overdue: 'Silent while overdue', reappeared: 'Reappeared', power_cut: 'Power cut',
    power_restored: 'Power restored', tamper: 'Tamper', risk_zone_enter: 'Entered risk zone',
    risk_zone_dwell: 'Dwelling in risk zone', long_stay: 'Long stay',
    device_separation: 'Devices separated', all_silent: 'All devices silent',
    risk_tier_changed: 'Risk tier rose',
    overdue_1_30: 'Overdue 1–30 days', overdue_31_90: 'Overdue 31–90 days',
    overdue_90_plus: 'Overdue 90+ days', power_cut_or_tamper: 'Power cut or tamper',
    long_stay_unusual: 'Long stay at an unusual place', outside_geofence: 'Outside geofence',
    reappeared_far: 'Reappeared far away',
    pawnshop: 'Pawnshop', used_car_market: 'Used-car market', second_pledge: 'Second pledge',
    vehicle_office: 'Vehicle office', repair_yard: 'Repair yard',
    wired: 'wired', wireless: 'wireless',
  },
  zh: {
    geofence_exit: '驶出电子围栏', geofence_return: '返回电子围栏', silent_overdue: '逾期失联',
    reappeared: '重新上线', power_cut: '断电', power_restored: '恢复供电', tamper: '拆除',
    risk_zone_enter: '进入风险区域', risk_zone_dwell: '风险区域停留', long_stay: '长时间停留',
    device_separation: '设备分离', all_silent: '全部设备失联', risk_tier_changed: '风险等级上升',
    overdue_1_30: '逾期 1–30 天', overdue_31_90: '逾期 31–90 天', overdue_90_plus: '逾期 90 天以上',
    power_cut_or_tamper: '断电或拆除', long_stay_unusual: '异常地点长时间停留',
    outside_geofence: '在电子围栏外', reappeared_far: '失联后异地出现',
    pawnshop: '典当行', used_car_market: '二手车市场', second_pledge: '二押点',
    vehicle_office: '车管所', repair_yard: '修理厂',
    wired: '有线', wireless: '无线',
  },
};

const KEY = 'lienwatch.lang';
let current = pick();
const listeners = [];

function pick() {
  const saved = localStorage.getItem(KEY);
  if (saved && STRINGS[saved]) return saved;
  const nav = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
  return nav.toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export function lang() {
  return current;
}

export function locale() {
  return current === 'zh' ? 'zh-CN' : 'en-GB';
}

export function setLang(l) {
  if (!STRINGS[l] || l === current) return;
  current = l;
  localStorage.setItem(KEY, l);
  document.documentElement.lang = locale();
  for (const f of listeners) f();
}

export function onLangChange(f) {
  listeners.push(f);
}

export function t(key, vars) {
  let s = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, String(v));
  return s;
}

/// An API code in the officer's language, or the code itself.
export function code(c) {
  // Own names only: a zone kind such as `constructor` is free text, not a property to look up.
  return Object.prototype.hasOwnProperty.call(CODES[current], c) ? CODES[current][c] : c;
}

/// Fills every `data-i18n` element of the static page.
export function translateStatic(root) {
  document.documentElement.lang = locale();
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}

/// "5 minutes ago", "3 天前".
export function ago(iso) {
  if (!iso) return t('never');
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return String(iso);
  const s = Math.round((ms - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto' });
  const abs = Math.abs(s);
  if (abs < 60) return rtf.format(s, 'second');
  if (abs < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (abs < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

export function when(iso) {
  if (!iso) return t('never');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(locale(), inZone({ dateStyle: 'short', timeStyle: 'medium' }));
}
