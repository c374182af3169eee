<?php
// The PHP oracle of tests/sync/test_replace.py: PHP builds and serializes each value,
// and rewrites it independently of forge_ci, from the documented rules:
// unserialize, replace recursively (the URL forms in every string, recursing into every
// string that is itself serialized PHP), serialize again.
// One JSON request per stdin line, one JSON answer per stdout line.

const FROM_HOST = 'example.com';
const TO_HOST = 'staging.example.com';
const TO_SCHEME = 'https';

function url_pattern(): string
{
    $host = preg_quote(FROM_HOST, '~');
    $after = '(?![A-Za-z0-9_-]|\.[A-Za-z0-9])';
    return '~((?:https?:)?//' . $host . $after . ')'
        . '|((?:https?:)?\\\\/\\\\/' . $host . $after . ')'
        . '|((?:https?%3[Aa])?%2[Ff]%2[Ff]' . $host . $after . ')~';
}

function replace_text(string $s): string
{
    return preg_replace_callback(url_pattern(), function (array $m): string {
        $scheme = $m[0][0] === 'h';
        if ($m[1] !== '') {
            return ($scheme ? TO_SCHEME . ':' : '') . '//' . TO_HOST;
        }
        if ($m[2] !== '') {
            return ($scheme ? TO_SCHEME . ':' : '') . '\\/\\/' . TO_HOST;
        }
        return ($scheme ? TO_SCHEME . '%3A' : '') . '%2F%2F' . TO_HOST;
    }, $s);
}

function unserialize_exact(string $s, mixed &$value): bool
{
    $value = @unserialize($s, ['allowed_classes' => false]);
    return ($value !== false || $s === 'b:0;') && serialize($value) === $s;
}

function rewrite_string(string $s): string
{
    $inner = null;
    if (unserialize_exact($s, $inner)) {
        return reserialize($inner);
    }
    return replace_text($s);
}

// serialize($v) with every string rewritten; objects of unloaded classes by hand,
// since PHP refuses to write properties of an incomplete object.
function reserialize(mixed $v): string
{
    if (is_string($v)) {
        return serialize(rewrite_string($v));
    }
    if (is_array($v)) {
        $out = 'a:' . count($v) . ':{';
        foreach ($v as $k => $item) {
            $out .= serialize($k) . reserialize($item);
        }
        return $out . '}';
    }
    if ($v instanceof __PHP_Incomplete_Class) {
        $props = (array) $v;
        $class = $props['__PHP_Incomplete_Class_Name'];
        unset($props['__PHP_Incomplete_Class_Name']);
        $out = 'O:' . strlen($class) . ':"' . $class . '":' . count($props) . ':{';
        foreach ($props as $name => $item) {
            $out .= serialize((string) $name) . reserialize($item);
        }
        return $out . '}';
    }
    return serialize($v);
}

function build(array $node): mixed
{
    switch ($node['t']) {
        case 'str':
        case 'int':
        case 'float':
        case 'bool':
            return $node['v'];
        case 'null':
            return null;
        case 'ser':
            return serialize(build($node['v']));
        case 'json':
            return json_encode(build($node['v']), JSON_THROW_ON_ERROR);
        case 'arr':
            $out = [];
            foreach ($node['items'] as [$key, $child]) {
                $out[$key] = build($child);
            }
            return $out;
        case 'obj':
            $class = $node['class'];
            $body = '';
            foreach ($node['props'] as [$visibility, $name, $child]) {
                $mangled = match ($visibility) {
                    'public' => $name,
                    'protected' => "\0*\0" . $name,
                    'private' => "\0" . $class . "\0" . $name,
                };
                $body .= serialize($mangled) . serialize(build($child));
            }
            $text = 'O:' . strlen($class) . ':"' . $class . '":' . count($node['props']) . ':{' . $body . '}';
            $object = unserialize($text, ['allowed_classes' => false]);
            if ($object === false) {
                throw new RuntimeException("oracle built an object PHP cannot read: $text");
            }
            return $object;
    }
    throw new RuntimeException('unknown node ' . $node['t']);
}

while (($line = fgets(STDIN)) !== false) {
    $request = json_decode($line, true, 512, JSON_THROW_ON_ERROR);
    if ($request['op'] === 'build') {
        $source = serialize(build($request['tree']));
        $answer = ['source' => base64_encode($source)];
    } else {
        $source = base64_decode($request['source'], true);
        $output = base64_decode($request['output'], true);
        $expected = reserialize(unserialize($source, ['allowed_classes' => false]));
        $read = @unserialize($output, ['allowed_classes' => false]);
        $readable = $read !== false || $output === 'b:0;';
        $answer = [
            'readable' => $readable,
            'equal' => $readable && serialize($read) === $expected,
            'expected' => base64_encode($expected),
        ];
    }
    echo json_encode($answer), "\n";
    flush();
}
