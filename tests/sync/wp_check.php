<?php
/**
 * PHP's verdict on a sync: every value of TO (staging) that PHP sees as serialized
 * must unserialize, and each value must equal what PHP makes of FROM's value by
 * unserializing it, replacing FROM's URL recursively (serialized data inside strings
 * included, JSON-escaped form too) and serializing it again. Reads its settings from
 * the environment; prints one JSON object.
 */
function db($prefix) {
    $db = new mysqli(getenv("{$prefix}_HOST"), getenv("{$prefix}_USER"), getenv("{$prefix}_PASSWORD"),
                     getenv("{$prefix}_NAME"), (int) getenv("{$prefix}_PORT"));
    $db->set_charset('utf8mb4');
    return $db;
}
$from = getenv('FROM_URL');
$to = getenv('TO_URL');
$search = [$from, str_replace('/', '\/', $from)];
$replace = [$to, str_replace('/', '\/', $to)];

function rewrite($value) {
    global $search, $replace;
    if (is_array($value)) {
        $out = [];
        foreach ($value as $k => $v) { $out[$k] = rewrite($v); }
        return $value === [] ? [] : $out;
    }
    if (is_string($value)) {
        if (is_serialized($value)) {
            $inner = @unserialize($value);
            if ($inner !== false || $value === 'b:0;') { return serialize(rewrite($inner)); }
        }
        return str_replace($search, $replace, $value);
    }
    return $value;
}
function is_serialized($v) {
    return is_string($v) && preg_match('/^(a:\d+:\{|s:\d+:"|i:-?\d+;|d:[^;]*;|b:[01];|N;|O:\d+:")/', $v)
        && preg_match('/[;}]$/', $v);
}

$src = db('FROM_DB');
$dst = db('TO_DB');
$skip_options = ['blog_public'];
$tables = [
    'wp_options' => ['option_name', 'option_value'],
    'wp_postmeta' => ['meta_id', 'meta_value'],
    'wp_usermeta' => ['umeta_id', 'meta_value'],
    'wp_posts' => ['ID', 'post_content'],
];
$checked = 0; $serialized = 0; $failures = [];
foreach ($tables as $table => [$key, $column]) {
    $rows = $dst->query("SELECT `$key`, `$column` FROM `$table`")->fetch_all();
    $staging = [];
    foreach ($rows as [$k, $v]) { $staging[$k] = $v; }
    foreach ($src->query("SELECT `$key`, `$column` FROM `$table`")->fetch_all() as [$k, $v]) {
        if ($table === 'wp_options' && (in_array($k, $skip_options, true) || str_contains($k, '_transient_'))) { continue; }
        if ($table === 'wp_postmeta' && in_array($v, ['jane.buyer@customer-mail.test', '+49 30 1234567'], true)) { continue; }
        if (!array_key_exists($k, $staging)) { $failures[] = "$table.$k missing in TO"; continue; }
        $got = $staging[$k];
        $checked++;
        if (is_serialized($v)) {
            $serialized++;
            $source = @unserialize($v);
            $mine = @unserialize($got);
            if ($mine === false && $got !== 'b:0;') { $failures[] = "$table.$k: TO's value does not unserialize"; continue; }
            if (serialize($mine) !== serialize(rewrite($source))) { $failures[] = "$table.$k: differs from PHP's replace"; }
        } elseif ($got !== rewrite($v)) {
            $failures[] = "$table.$k: text differs from PHP's replace";
        }
    }
}
echo json_encode(['checked' => $checked, 'serialized' => $serialized, 'failures' => $failures]), "\n";
