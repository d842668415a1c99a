package wire

// CheckMsgPack exposes the MessagePack length check to the fuzz targets,
// which hold it to msgpack's own decoder.
var CheckMsgPack = checkMsgPack
