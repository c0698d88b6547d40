// WGS-84 -> GCJ-02, so that positions line up with Chinese map tiles (protocols.md F.1). Stored
// data stays WGS-84; only what is drawn is shifted.
//
// GCJ-02 is defined by an unpublished official algorithm; the formula below is the widely
// published reconstruction (Krasovsky 1940 ellipsoid, a = 6378245 m, e^2 = 0.00669342162296594323,
// and the two polynomial-trigonometric offset series), as documented and tested in
// github.com/googollee/eviltransform (README and its test vectors: Shanghai, Shenzhen, Beijing)
// and in many map SDKs. Written here from that description; accurate to about a metre.
// Outside China's bounding box the datum is WGS-84 itself, so nothing is shifted.

const A = 6378245.0;
const EE = 0.00669342162296594323;

function outsideChina(lat, lon) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

function offsetLat(x, y) {
  let r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  r += ((20.0 * Math.sin(6.0 * x * Math.PI) + 20.0 * Math.sin(2.0 * x * Math.PI)) * 2.0) / 3.0;
  r += ((20.0 * Math.sin(y * Math.PI) + 40.0 * Math.sin((y / 3.0) * Math.PI)) * 2.0) / 3.0;
  r += ((160.0 * Math.sin((y / 12.0) * Math.PI) + 320.0 * Math.sin((y * Math.PI) / 30.0)) * 2.0) / 3.0;
  return r;
}

function offsetLon(x, y) {
  let r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  r += ((20.0 * Math.sin(6.0 * x * Math.PI) + 20.0 * Math.sin(2.0 * x * Math.PI)) * 2.0) / 3.0;
  r += ((20.0 * Math.sin(x * Math.PI) + 40.0 * Math.sin((x / 3.0) * Math.PI)) * 2.0) / 3.0;
  r += ((150.0 * Math.sin((x / 12.0) * Math.PI) + 300.0 * Math.sin((x / 30.0) * Math.PI)) * 2.0) / 3.0;
  return r;
}

/// [lat, lon] in GCJ-02 for a WGS-84 position.
export function wgs84ToGcj02(lat, lon) {
  if (outsideChina(lat, lon)) return [lat, lon];
  const x = lon - 105.0;
  const y = lat - 35.0;
  const radLat = (lat / 180.0) * Math.PI;
  let magic = Math.sin(radLat);
  magic = 1 - EE * magic * magic;
  const sqrtMagic = Math.sqrt(magic);
  const dLat = (offsetLat(x, y) * 180.0) / (((A * (1 - EE)) / (magic * sqrtMagic)) * Math.PI);
  const dLon = (offsetLon(x, y) * 180.0) / ((A / sqrtMagic) * Math.cos(radLat) * Math.PI);
  return [lat + dLat, lon + dLon];
}
